"""The one stage store: every stage (teacher, S0, res-students, searches, baselines, the
assistant's phases) is stored under ``<root>/<kind>-<key>/``, the key hashing its config and its
inputs' keys, so a finished stage is loaded instead of computed again.

Commit protocol: a stage is computed in ``<kind>-<key>.partial/`` (where its epoch checkpoints
live, so an interrupted stage resumes from its last epoch), its files and last of all
``stage.json`` are written there, and the directory is renamed to ``<kind>-<key>/`` in one step.
A stage directory without ``stage.json`` is never trusted: a crash at any point leaves either a
partial stage (resumed or recomputed) or a complete one. One stage key is computed by one worker
at a time: the store holds the lock it is given (the service's is in the database) while it checks
and computes.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.data import Dataset

from distill import memory, observe
from distill.train import TrainConfig, TrainTask, fit

DONE = "stage.json"
Lock = Callable[[str, str], AbstractContextManager[None]]


def stage_key(kind: str, payload: Mapping[str, Any]) -> str:
    text = json.dumps({"kind": kind, **payload}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def write_atomic(path: Path, text: str | bytes) -> None:
    """``text`` (or bytes) at ``path``, written to a temporary name and renamed (never half a
    file)."""
    tmp = path.with_name(path.name + ".tmp")
    try:
        tmp.write_bytes(text) if isinstance(text, bytes) else tmp.write_text(text)
        tmp.replace(path)
    except BaseException:
        tmp.unlink(missing_ok=True)  # a full disk leaves no half-written file behind
        raise


@dataclass
class StageResult:
    kind: str
    key: str
    trained: bool  # False when a stored result was reused
    seconds: float
    directory: Path
    # the peak memory while it was computed and what that measures (``distill.memory.peak``)
    peak_memory_bytes: int | None = None
    peak_memory_of: str | None = None

    def summary(self) -> dict[str, Any]:
        """The stage as a report line."""
        return {
            "kind": self.kind,
            "key": self.key,
            "trained": self.trained,
            "seconds": round(self.seconds, 2),
            "peak_memory_bytes": self.peak_memory_bytes,
            "peak_memory_of": self.peak_memory_of,
        }


@dataclass(frozen=True)
class StageStore:
    root: Path
    lock: Lock = field(default=observe.exclusive)
    log: Callable[[str], None] = print

    def compute(
        self,
        kind: str,
        payload: Mapping[str, Any],
        *,
        desc: str,
        make: Callable[[Path], None],
        load: Callable[[Path], None] = lambda _: None,
    ) -> StageResult:
        """Load the stage with ``load(directory)``, or ``make(partial_directory)`` and commit it."""
        key = stage_key(kind, payload)
        final = self.root / f"{kind}-{key}"
        observer = observe.current()
        with self.lock(kind, key):  # no two workers compute one stage at once
            if (final / DONE).is_file():
                load(final)
                meta = json.loads((final / DONE).read_text())
                self.log(f"stage {kind} [{key}]: stored result reused")
                if observer is not None:
                    observer.stage_reused(kind, key, desc)
                peak = {k: meta.get(k) for k in ("peak_memory_bytes", "peak_memory_of")}
                return StageResult(kind, key, False, float(meta["seconds"]), final, **peak)
            if observer is not None:
                observer.stage_started(kind, key, desc)
            started = time.perf_counter()
            memory.reset_peak()
            partial = self.root / f"{kind}-{key}.partial"
            partial.mkdir(parents=True, exist_ok=True)
            write_atomic(partial / "config.json", json.dumps(payload, indent=2, default=str))
            make(partial)
            seconds, peak = time.perf_counter() - started, memory.peak()
            done = {"kind": kind, "key": key, "seconds": seconds, **peak}
            write_atomic(partial / DONE, json.dumps(done))
            if final.exists():  # a stage left half-written by an older version: never trusted
                shutil.rmtree(final)
            partial.rename(final)
            if observer is not None:
                observer.stage_finished(kind, key, seconds)
            return StageResult(kind, key, True, seconds, final, **peak)

    def train(
        self,
        kind: str,
        payload: Mapping[str, Any],
        nets: Mapping[str, nn.Module],
        *,
        task: TrainTask,
        train_data: Dataset[tuple[Tensor, int]],
        config: TrainConfig,
        desc: str,
        progress: bool = True,
        eval_data: Dataset[tuple[Tensor, int]] | None = None,
    ) -> StageResult:
        """Load ``nets`` from the stage's stored weights, or train ``task`` and store them;
        training resumes from the stage's epoch checkpoint when an earlier run was interrupted.

        ``eval_data`` (ResKD's D_v): the accuracy of ``task.predict`` on it after every epoch,
        in each epoch's record (what the service stores as the stage's ``eval_accuracy``). It is
        not part of the stage's key: evaluating changes no weight."""

        def make(directory: Path) -> None:
            fit(
                task,
                train_data,
                config=config,
                eval_data=eval_data,
                checkpoint_dir=directory,
                desc=desc,
                progress=progress,
            )
            torch.save(
                {name: net.state_dict() for name, net in nets.items()}, directory / "weights.pt"
            )
            (directory / "last.pt").unlink(missing_ok=True)  # no longer needed

        def load(directory: Path) -> None:
            state = torch.load(directory / "weights.pt", map_location="cpu", weights_only=True)
            for name, net in nets.items():
                net.load_state_dict(state[name])

        return self.compute(kind, payload, desc=desc, make=make, load=load)
