"""Is a checkpoint whole? A full disk or a killed upload can leave one cut short.

Each rank writes a manifest of the files it put in a checkpoint, with their sizes, as the last
file. At restore, the newest checkpoint whose state file and every rank's files are all there at
full size is used; newer ones that are not are named with the reason, and the trial restarts
from the one before (or from step 0). The driver reports the same at `resume`, before trials
start. Sizes, not hashes: hashing a 7B model's shards at every restore costs minutes.

Works on any pyarrow filesystem (a local path, s3://, gs://), like Ray Train's storage.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

STATE_FILE = "trial_state.json"  # the trial's state (`trial.TrialState` as JSON)
MANIFEST = "manifest.rank{rank}.json"
PREFIX = "checkpoint_"  # Ray Train's folder names, which sort by time


def write_manifest(folder: Path, rank: int, world: int) -> None:
    """Last into the folder: the files this rank wrote (the state file says how many ranks)."""
    files = {str(path.relative_to(folder)): path.stat().st_size for path in sorted(folder.rglob("*")) if path.is_file()}
    (folder / MANIFEST.format(rank=rank)).write_text(json.dumps({"world": world, "files": files}))


def problem(filesystem, path: str) -> str | None:
    """Why the checkpoint at `path` cannot be restored, or None when it is whole."""
    from pyarrow.fs import FileType

    if read_json(filesystem, f"{path}/{STATE_FILE}") is None:
        return f"{STATE_FILE} is missing or unreadable"
    first = read_json(filesystem, f"{path}/{MANIFEST.format(rank=0)}")
    if first is None:
        return f"{MANIFEST.format(rank=0)} is missing or unreadable"
    for rank in range(first["world"]):
        manifest = first if rank == 0 else read_json(filesystem, f"{path}/{MANIFEST.format(rank=rank)}")
        if manifest is None:
            return f"{MANIFEST.format(rank=rank)} is missing or unreadable"
        for name, size in manifest["files"].items():
            info = filesystem.get_file_info(f"{path}/{name}")
            if info.type != FileType.File:
                return f"{name} is missing"
            if info.size != size:
                return f"{name} has {info.size} of {size} bytes"
    return None


def read_json(filesystem, path: str) -> dict | None:
    try:
        with filesystem.open_input_stream(path) as stream:
            return json.loads(stream.read())
    except (OSError, ValueError):
        return None


@dataclass(frozen=True)
class Choice:
    """The checkpoint to restore (None: start at step 0) and the newer ones passed over."""

    path: str | None
    state: dict | None
    skipped: list[tuple[str, str]]

    def describe(self, trial_id: str) -> list[str]:
        start = f"checkpoint {self.path} (step {self.state['step']} of stage {self.state['stage']})" \
            if self.path else "step 0"
        return [f"trial {trial_id}: checkpoint {path} is cut short ({why}); it restarts from {start}"
                for path, why in self.skipped]


def newest_whole(filesystem, folder: str) -> Choice:
    """The newest whole checkpoint in a trial's checkpoint folder. Workers and the driver list
    the same folder, so what the driver announces at `resume` is what the workers do. (A whole
    checkpoint whose report Ray Train never registered holds all its steps: it is used too.)"""
    from pyarrow.fs import FileSelector, FileType

    entries = filesystem.get_file_info(FileSelector(folder, allow_not_found=True))
    paths = sorted((entry.path for entry in entries
                    if entry.type == FileType.Directory and entry.base_name.startswith(PREFIX)), reverse=True)
    skipped = []
    for path in paths:
        why = problem(filesystem, path)
        if why is None:
            return Choice(path, read_json(filesystem, f"{path}/{STATE_FILE}"), skipped)
        skipped.append((path, why))
    return Choice(None, None, skipped)
