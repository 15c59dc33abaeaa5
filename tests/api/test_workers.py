"""How ``reskd serve`` shares the machine among its local workers."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from api.runtime.serve import allocator_library, with_allocator, worker_env, worker_specs
from api.runtime.settings import Settings


def test_workers_share_the_cores_unless_told_their_threads(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("RESKD_WORKER_THREADS", raising=False)  # the test run's own setting
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


def test_allocator_setting_names_the_field_and_resolves(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="allocator"):
        Settings(allocator=str(tmp_path / "missing.so"))
    assert allocator_library("system") is None
    assert allocator_library("auto", dirs=[tmp_path]) is None  # none installed: glibc's
    library = tmp_path / "libtcmalloc_minimal.so.4"
    library.write_bytes(b"")
    assert allocator_library("auto", dirs=[tmp_path / "none", tmp_path]) == str(library)
    assert allocator_library(str(library)) == str(library)


def test_cpu_workers_preload_the_allocator_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    library = tmp_path / "libtcmalloc_minimal.so.4"
    library.write_bytes(b"")
    settings = Settings(allocator=str(library))
    monkeypatch.setenv("LD_PRELOAD", "/opt/other.so")
    env = worker_env(settings, gpu=None, threads=1)
    assert env["LD_PRELOAD"] == f"{library}:/opt/other.so"
    monkeypatch.setenv("LD_PRELOAD", env["LD_PRELOAD"])  # a worker started by a worker
    assert worker_env(settings, gpu=None, threads=1)["LD_PRELOAD"] == env["LD_PRELOAD"]
    monkeypatch.delenv("LD_PRELOAD")
    assert "LD_PRELOAD" not in worker_env(Settings(allocator="system"), gpu=None, threads=1)
    assert "LD_PRELOAD" not in worker_env(settings, gpu=0, threads=1)  # GPU workers: as they are
    assert with_allocator(str(library), {"LD_PRELOAD": str(library)}) is None
    assert with_allocator("system", {}) is None


def test_training_commands_restart_under_the_allocator(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``reskd run`` and ``reskd search`` from a shell exec themselves again under the
    allocator, once; a bad RESKD_ALLOCATOR is refused, naming it."""
    from api.cli.allocator import restart_under_allocator

    library = tmp_path / "libtcmalloc_minimal.so.4"
    library.write_bytes(b"")
    execs: list[tuple[str, list[str], dict[str, str]]] = []
    monkeypatch.setattr(os, "execve", lambda path, args, env: execs.append((path, args, env)))
    monkeypatch.setattr(sys, "orig_argv", [sys.executable, "reskd", "search", "x.yaml"])
    monkeypatch.delenv("LD_PRELOAD", raising=False)
    monkeypatch.setenv("RESKD_ALLOCATOR", str(library))
    assert restart_under_allocator() is None
    assert execs == [(sys.executable, sys.orig_argv, execs[0][2])]
    assert execs[0][2]["LD_PRELOAD"] == str(library)
    monkeypatch.setenv("LD_PRELOAD", str(library))  # the restarted process: no second exec
    assert restart_under_allocator() is None and len(execs) == 1
    monkeypatch.setenv("RESKD_ALLOCATOR", str(tmp_path / "missing.so"))
    assert "RESKD_ALLOCATOR" in (restart_under_allocator() or "")


@pytest.mark.slow  # restarts a training command
@pytest.mark.skipif(allocator_library("auto") is None, reason="tcmalloc is not installed")
def test_training_command_runs_after_its_restart(tmp_path: Path) -> None:
    """The real exec: ``reskd search`` comes back under tcmalloc and reads its config."""
    env = {k: v for k, v in os.environ.items() if k not in ("LD_PRELOAD", "RESKD_ALLOCATOR")}
    command = [sys.executable, "-m", "api.cli.main", "search", str(tmp_path / "none.yaml")]
    root = Path(__file__).parents[2]
    out = subprocess.run(command, env=env, cwd=root, capture_output=True, text=True)
    assert out.returncode == 2 and "none.yaml" in out.stderr  # it got as far as reading it
    bad = env | {"RESKD_ALLOCATOR": str(tmp_path / "missing.so")}
    out = subprocess.run(command, env=bad, cwd=root, capture_output=True, text=True)
    assert out.returncode == 2 and "RESKD_ALLOCATOR" in out.stderr


_TRAIN = """
import hashlib, pathlib, torch
from space.genotypes import DARTS_V2
from space.network import GenotypeNetwork
torch.manual_seed(0)
net = GenotypeNetwork(DARTS_V2, channels=4, layers=3, num_classes=10, in_chans=1, input_size=8)
opt = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)
x, y = torch.randn(32, 1, 8, 8), torch.randint(0, 10, (32,))
for _ in range(3):
    opt.zero_grad()
    torch.nn.functional.cross_entropy(net(x), y).backward()
    opt.step()
digest = hashlib.sha256(b"".join(p.detach().numpy().tobytes() for p in net.parameters()))
maps = pathlib.Path("/proc/self/maps").read_text()
print(digest.hexdigest(), "tcmalloc" in maps)
"""


@pytest.mark.slow  # two trainings in subprocesses
@pytest.mark.skipif(allocator_library("auto") is None, reason="tcmalloc is not installed")
def test_training_under_the_preloaded_allocator_gives_the_same_floats() -> None:
    """What ``allocator: auto`` changes in a worker: the allocator, not one bit of a result."""
    runs = {}
    for choice in ("system", "auto"):
        env = worker_env(Settings(allocator=choice), gpu=None, threads=2)
        out = subprocess.run(
            [sys.executable, "-c", _TRAIN],
            env=env,
            cwd=Path(__file__).parents[2],
            capture_output=True,
            text=True,
            check=True,
        )
        runs[choice] = out.stdout.split()
    assert runs["system"][1] == "False" and runs["auto"][1] == "True"
    assert runs["system"][0] == runs["auto"][0]
