"""A job that runs out of device memory fails naming its stage, batch size and what to lower; its
worker lives on and runs the next job, whose stages record their peak memory in the progress the
API shows."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from api.runtime.settings import Settings
from api.runtime.worker import Worker
from space.zoo import Backbone
from tests.api.service import tiny_config

FITS = 64  # the largest training batch the pretend device holds


@pytest.fixture
def small_device(monkeypatch: pytest.MonkeyPatch) -> None:
    """Zoo networks whose training forward pass on more than ``FITS`` images fails as CUDA's
    allocator does (PyTorch's own exception class)."""
    forward = Backbone.forward

    def greedy(self: Backbone, x: torch.Tensor) -> Any:
        if self.training and len(x) > FITS:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB.")
        return forward(self, x)

    monkeypatch.setattr(Backbone, "forward", greedy)


@pytest.mark.usefixtures("small_device")
def test_a_job_out_of_device_memory_fails_naming_what_to_lower_and_the_worker_runs_the_next(
    tmp_path: Path,
) -> None:
    worker = Worker(Settings(artifact_root=tmp_path))
    worker.db.migrate()
    too_big = worker.queue.submit(
        kind="distill", config=tiny_config(train={"epochs": 1, "batch_size": 128}),
        dataset="digits", name=None,
    )  # fmt: skip
    fits = worker.queue.submit(
        kind="distill", config=tiny_config(train={"epochs": 1, "batch_size": FITS}),
        dataset="digits", name=None,
    )  # fmt: skip
    assert worker.start_jobs() == 1 and worker.start_jobs() == 1
    with worker.db.session(readonly=True) as s:
        from db.models import Job, Stage

        failed, done = s.get(Job, too_big), s.get(Job, fits)
        assert failed is not None and failed.state == "failed"
        assert failed.error == (
            "DeviceOutOfMemory: teacher resnet8x0.25: the device ran out of memory at batch size 128 "
            "(precision 32, 1 device); lower train.batch_size, train.precision (bf16 or "
            "16-mixed halve the activations), or spread the batch over more devices (devices: 2)"
        )
        assert done is not None and done.state == "succeeded", done.error
        stages = s.query(Stage).filter(Stage.job_id == fits).all()
        trained = [st for st in stages if st.progress and "epoch" in st.progress]
        assert trained, "the teacher and S0 trained"
        for stage in trained:
            assert stage.progress["peak_memory_of"] == "rss"
            assert stage.progress["peak_memory_bytes"] > 10 * 2**20
    worker.db.dispose()
