"""A home that cannot take a sweep: read-only or too small, refused before anything starts; a
disk that fills mid-run: the trial errors, `run` exits 1 with one line and the way back, and
`resume` finishes it once there is space again, passing over a checkpoint that was cut short
(with Ray Train's record of the checkpoints gone, as a killed driver can leave it).

The home is a real mount (tests run as root, which ignores file modes): a read-only tmpfs, and a
small tmpfs that a filler file fills while the trial trains.
"""
from __future__ import annotations

import json
import re
import subprocess
import time
from pathlib import Path

import pytest

from conftest import cli, start_cli, write_sweep
from helpers import MID_RUN_STEPS, assert_resumed_once, checkpoint_registered, tiny_sweep
from persona_sweep import checkpoints, engine, names, storage

STEPS = MID_RUN_STEPS  # the filler must land mid-run


def mount_tmpfs(folder: Path, size_mb: int, read_only: bool = False) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    options = f"size={size_mb}m" + (",ro" if read_only else "")
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(folder)], capture_output=True, text=True)
    if result.returncode != 0:
        pytest.fail(f"these tests mount a tmpfs as root: {result.stderr.strip()}")
    return folder


@pytest.fixture
def mounts():
    mounted: list[Path] = []
    yield lambda folder, size_mb, read_only=False: mounted.append(mount_tmpfs(folder, size_mb, read_only)) or folder
    for folder in mounted:
        subprocess.run(["umount", "-l", str(folder)], check=False)


def sweep_file(tmp_path: Path, name: str) -> str:
    (tmp_path / "trigger").write_text("~storage-trigger~")
    write_sweep(tmp_path / f"{name}.yaml", tiny_sweep(name, STEPS))
    return f"{name}.yaml"


@pytest.mark.parametrize("size_mb, read_only, says", [
    (16, True, "not writable (Read-only file system); set PERSONA_SWEEP_HOME to a writable folder"),
    (16, False, "16 MB free, a sweep needs at least 100 MB (checkpoints, MLflow); free some space or set "
               "PERSONA_SWEEP_HOME"),
])
def test_a_home_that_cannot_take_a_sweep_is_refused_before_anything_starts(tmp_path, mounts, size_mb, read_only, says):
    home = mounts(tmp_path / "home", size_mb, read_only)
    result = cli("run", sweep_file(tmp_path, "small"), home=home, cwd=tmp_path, check=False, timeout=120)
    assert result.returncode == 2, result.stdout + result.stderr
    assert result.stderr.strip() == f"error: home {home}: {says}"
    assert list(home.iterdir()) == []


@pytest.mark.parametrize("through_the_sweep_s_storage", [True, False])
def test_a_file_tune_uploads_onto_a_full_disk_is_replaced_whole_or_not_at_all(
        tmp_path, mounts, through_the_sweep_s_storage):
    """Tune uploads its experiment state over the old file; on a disk that fills part-way, the
    local filesystem leaves it cut short (the second case, which the sweep's storage must not)."""
    from pyarrow.fs import LocalFileSystem
    from ray.train._internal.storage import _upload_to_fs_path

    disk = mounts(tmp_path / "disk", 1)
    state = disk / "experiment_state-2026.json"
    state.write_text(json.dumps({"trials": ["whole"]}))
    larger_than_the_disk = tmp_path / "experiment_state-2026.json"
    larger_than_the_disk.write_text(json.dumps({"trials": ["x" * 2**21]}))
    location, filesystem = storage.for_tune(str(disk))
    filesystem = filesystem if through_the_sweep_s_storage else LocalFileSystem()

    with pytest.raises(OSError, match="No space left on device"):
        _upload_to_fs_path(str(larger_than_the_disk), filesystem, f"{location}/{state.name}")

    if through_the_sweep_s_storage:
        assert json.loads(state.read_text()) == {"trials": ["whole"]}
        assert [path.name for path in disk.iterdir()] == [state.name]
    else:
        assert 0 < state.stat().st_size < larger_than_the_disk.stat().st_size
        assert checkpoints.read_json(filesystem, str(state)) is None


@pytest.mark.slow
def test_a_disk_that_fills_mid_run_errors_the_trial_and_resume_passes_over_a_cut_short_checkpoint(
        tmp_path, mounts, ray_address):
    home = mounts(tmp_path / "runs", 160)
    storage = home / "ray_results" / "full"
    log = tmp_path / "driver.log"
    driver = start_cli("run", sweep_file(tmp_path, "full"), "--address", ray_address, home=None, cwd=tmp_path, log=log)
    try:
        while not checkpoint_registered(storage, **{names.TRAIN_STEP: 10}):
            assert driver.poll() is None, log.read_text()[-3000:]
            time.sleep(0.3)
        filler = fill(home)
        assert driver.wait(600) == 1, log.read_text()[-3000:]
    finally:
        if driver.poll() is None:
            driver.kill()
    output = log.read_text()
    assert re.search(r"ERROR +\S+ .*(database or disk is full|No space left on device)", output), output[-3000:]
    engine.check_tune_state_whole("full", str(storage))  # Tune's forced upload on the full disk left it whole
    last = output.rstrip().splitlines()[-1]
    assert "`persona-sweep resume full`" in last, last

    filler.unlink()
    cut, before = cut_the_newest_whole_checkpoint(storage)
    forget_registered_checkpoints(storage)
    result = cli("resume", "full", "--address", ray_address, home=None, cwd=tmp_path)
    (run,) = assert_resumed_once(home, "full", trials=1, steps=STEPS, resumed=1)
    trial_id = run.data.tags[names.TRIAL_ID]
    assert (f"trial {trial_id}: checkpoint {cut['path']} is cut short ({cut['file']} has {cut['size']} of "
            f"{cut['full']} bytes); it restarts from checkpoint {before['path']} (step {before['step']} of stage marker)"
            ) in result.stdout
    assert run.data.metrics[names.RESUMED_FROM_STEP] == before["step"]


def fill(home: Path) -> Path:
    filler = home / "filler"
    with filler.open("wb") as handle:
        try:
            while True:
                handle.write(b"\0" * 2**20)
                handle.flush()
        except OSError:
            pass
    return filler


def forget_registered_checkpoints(storage: Path) -> None:
    """Remove Ray Train's record of the trial's checkpoints, as a driver killed before Ray Train
    registered them leaves it: the trial must restart from what is whole on disk all the same."""
    (snapshot,) = (storage / "_train").glob("train-*/checkpoint_manager_snapshot.json")
    snapshot.unlink()


def cut_the_newest_whole_checkpoint(storage: Path) -> tuple[dict, dict]:
    """Halve the largest file of the trial's newest whole checkpoint; return it and the whole
    checkpoint before it, which the trial must restart from."""
    from pyarrow.fs import LocalFileSystem

    filesystem = LocalFileSystem()
    (trial_folder,) = (storage / "_train").glob("train-*")
    whole = [path for path in sorted(trial_folder.glob(f"{checkpoints.PREFIX}*"), reverse=True)
             if checkpoints.problem(filesystem, str(path)) is None]
    assert len(whole) >= 2, sorted(trial_folder.iterdir())
    newest, before = whole[0], whole[1]
    largest = max((path for path in newest.rglob("*") if path.is_file()), key=lambda path: path.stat().st_size)
    full = largest.stat().st_size
    with largest.open("r+b") as handle:
        handle.truncate(full // 2)
    step = checkpoints.read_json(filesystem, str(before / checkpoints.STATE_FILE))["step"]
    return ({"path": newest, "file": largest.relative_to(newest), "size": full // 2, "full": full},
            {"path": before, "step": step})
