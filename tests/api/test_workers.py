"""How ``reskd serve`` shares the machine among its local workers."""

from __future__ import annotations

import pytest

from api.runtime.serve import worker_env, worker_specs
from api.runtime.settings import Settings


def test_workers_share_the_cores_unless_told_their_threads() -> None:
    settings = Settings()
    assert worker_specs(settings, 2, [], 2) == [(None, 1), (None, 1)]
    assert worker_specs(settings, 3, [], 2) == [(None, 1)] * 3  # never 0 threads
    assert worker_specs(settings, 2, [0, 1, 2], 16) == [(0, 8), (1, 8)]
    told = Settings(worker_threads=2)
    assert worker_specs(told, 2, [], 2) == [(None, 2), (None, 2)]
    env = worker_env(told, gpu=None, threads=2)
    assert env["OMP_NUM_THREADS"] == "2" and env["RESKD_DEVICE"] == "cpu"


def test_worker_threads_out_of_range_name_the_field(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RESKD_WORKER_THREADS", "0")
    with pytest.raises(ValueError, match="worker_threads"):
        Settings()
