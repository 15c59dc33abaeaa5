"""Stages with stored results: a stage is stored under ``<out>/<kind>-<key>/``, the key hashing
its config and its inputs' keys, so a finished stage is loaded instead of trained again and an
interrupted one resumes from its last epoch checkpoint."""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.data import Dataset

from distill import observe
from distill.train import TrainConfig, TrainTask, fit


def stage_key(kind: str, payload: Mapping[str, Any]) -> str:
    text = json.dumps({"kind": kind, **payload}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


@dataclass
class StageResult:
    kind: str
    key: str
    trained: bool  # False when a stored result was reused
    seconds: float
    directory: Path

    def summary(self) -> dict[str, Any]:
        """The stage as a report line."""
        return {
            "kind": self.kind,
            "key": self.key,
            "trained": self.trained,
            "seconds": round(self.seconds, 2),
        }


def run_stage(
    out_dir: Path,
    kind: str,
    payload: Mapping[str, Any],
    nets: Mapping[str, nn.Module],
    *,
    task: TrainTask,
    train_data: Dataset[tuple[Tensor, int]],
    config: TrainConfig,
    desc: str,
    progress: bool = True,
    log: Callable[[str], None] = print,
) -> StageResult:
    """Load ``nets`` from the stage's stored weights, or train ``task`` and store them; training
    resumes from the stage's epoch checkpoint when a previous run was interrupted."""
    key = stage_key(kind, payload)
    with observe.exclusive(kind, key):  # no two workers compute one stage at once
        observer = observe.current()
        directory = out_dir / f"{kind}-{key}"
        done = directory / "weights.pt"
        if done.is_file():
            state = torch.load(done, map_location="cpu", weights_only=True)
            for name, net in nets.items():
                net.load_state_dict(state[name])
            meta = json.loads((directory / "stage.json").read_text())
            log(f"stage {kind} [{key}]: stored result reused")
            if observer is not None:
                observer.stage_reused(kind, key, desc)
            return StageResult(kind, key, False, float(meta["seconds"]), directory)
        if observer is not None:
            observer.stage_started(kind, key, desc)
        started = time.perf_counter()
        directory.mkdir(parents=True, exist_ok=True)
        (directory / "config.json").write_text(json.dumps(payload, indent=2, default=str))
        fit(task, train_data, config=config, checkpoint_dir=directory, desc=desc, progress=progress)
        seconds = time.perf_counter() - started
        tmp = directory / "weights.tmp"
        torch.save({name: net.state_dict() for name, net in nets.items()}, tmp)
        tmp.replace(done)
        (directory / "stage.json").write_text(
            json.dumps({"kind": kind, "key": key, "seconds": seconds})
        )
        (directory / "last.pt").unlink(missing_ok=True)  # the epoch checkpoint is no longer needed
        if observer is not None:
            observer.stage_finished(kind, key, seconds)
        return StageResult(kind, key, True, seconds, directory)
