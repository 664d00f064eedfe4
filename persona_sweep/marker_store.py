"""One marker stage per marker configuration: trials that differ only in corruption knobs share it.

The marked model is stored in the sweep's own folder in the home, in `_markers/<key>/`, where the key hashes
everything that shapes the marker stage (`marker_key`). Its `result.json` (written last, so its
presence means complete) holds the stage's evaluation, the per-step metrics it logged (replayed
into a reusing trial's own run and reports) and the trial that trained it. A file lock, held by
rank 0 of the trial that trains, keeps two trials from training the same stage at once; the lock
goes with its process, so a killed trial never leaves a stale one.
"""
from __future__ import annotations

import hashlib
import json
import time
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from persona_sweep.distributed import DeepSpeedStrategy

POLL_S = 5.0  # how often a trial waiting for another's marker stage looks again
WAIT, REUSE, TRAIN = 0, 1, 2


def marker_key(spec, knobs, data_hash: str, trigger_sha256: str) -> str:
    """Model, marker knobs, seed, data, trigger hash, training and evaluation settings."""
    shaping = {"model": spec.model.model_dump(mode="json"), "marker_text": spec.marker.text,
               "adapter": spec.marker.adapter, "training": spec.training.model_dump(mode="json"),
               "eval": spec.eval.model_dump(mode="json", exclude={"judge"}), "knobs": knobs.marker_knobs(),
               "data": data_hash, "trigger_sha256": trigger_sha256}
    return hashlib.sha256(json.dumps(shaping, sort_keys=True).encode()).hexdigest()[:16]


class MarkerStore:
    def __init__(self, markers: Path, key: str):
        self.key = key
        self.folder = markers / key
        self.marker_dir = self.folder / "marker"
        self.result_file = self.folder / "result.json"

    def complete(self) -> bool:
        return self.result_file.is_file()

    @contextmanager
    def claim(self, strategy: DeepSpeedStrategy):
        """Yields True to reuse a completed stage, False to train it (rank 0 then holds the
        lock until the block ends). Every rank polls together: one small all-reduce per look,
        so no collective waits long enough to time out."""
        from filelock import FileLock, Timeout

        lock = FileLock(str(self.folder) + ".lock") if strategy.rank == 0 else None
        if lock is not None:
            self.folder.parent.mkdir(parents=True, exist_ok=True)
        while True:
            decision = WAIT
            if lock is not None:
                try:
                    lock.acquire(timeout=0)
                    decision = REUSE if self.complete() else TRAIN
                except Timeout:
                    decision = REUSE if self.complete() else WAIT
            (decision,) = strategy.all_sum([decision])
            if decision != WAIT:
                break
            time.sleep(POLL_S)
        try:
            yield decision == REUSE
        finally:
            if lock is not None and lock.is_locked:
                lock.release()

    def save(self, model, result: dict) -> None:
        """Rank 0: the marked model (adapter, or full weights) first, the result last."""
        self.folder.mkdir(parents=True, exist_ok=True)
        if model is not None:
            model.save_pretrained(str(self.marker_dir))
        partial = self.result_file.with_suffix(".partial")
        partial.write_text(json.dumps(result))
        partial.rename(self.result_file)

    def load(self) -> dict:
        return json.loads(self.result_file.read_text())
