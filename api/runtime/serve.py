"""``reskd serve``: the API and an embedded worker pool (one worker per visible GPU with
``CUDA_VISIBLE_DEVICES`` set to it, or N CPU workers sharing the cores); dead workers are
restarted. ``reskd worker`` runs workers alone against the same database."""

from __future__ import annotations

import gc
import os
import socket
import subprocess
import sys
import sysconfig
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from api.runtime.devices import GPUS_ENV
from api.runtime.exits import EXIT_DATABASE_GONE
from api.runtime.settings import Settings

if TYPE_CHECKING:
    from api.runtime.ray_dispatch import RayDispatcher

LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")
# How long a stopping server waits for the responses in flight (an upload, a long query) before
# it closes their connections; open event streams end at once (``ending_streams``).
SHUTDOWN_GRACE_SECONDS = 5
# gperftools' tcmalloc, the allocator ``allocator: auto`` preloads into CPU workers when installed
TCMALLOC_NAMES = ("libtcmalloc_minimal.so.4", "libtcmalloc.so.4")


def library_dirs() -> list[Path]:
    """Where the dynamic linker finds the system's shared libraries (Debian's multiarch first)."""
    arch = sysconfig.get_config_var("MULTIARCH") or ""
    names = [f"/usr/lib/{arch}", f"/lib/{arch}"] if arch else []
    return [Path(d) for d in [*names, "/usr/lib64", "/usr/lib", "/usr/local/lib"]]


def allocator_library(choice: str, dirs: list[Path] | None = None) -> str | None:
    """The shared library ``choice`` (the ``allocator`` setting) preloads: ``auto`` gives
    tcmalloc when it is installed, else None (the system's allocator), as ``system`` does.

    Training a small network (the searched cells: 4-16 channels, 8x8 to 32x32 maps) makes
    many short-lived allocations per operation: oneDNN's reordered copies and scratchpads,
    autograd's buffers. glibc's malloc spends much of that time consolidating and returning
    memory; tcmalloc keeps per-thread caches. The arithmetic, and so every result, is the same
    (PyTorch aligns its buffers to 64 bytes under either allocator); the demo's stages measured
    1.1-1.3x faster under it (README, "The service")."""
    if choice == "system" or sys.platform != "linux":
        return None
    if choice != "auto":
        return choice
    for directory in library_dirs() if dirs is None else dirs:
        for name in TCMALLOC_NAMES:
            if (directory / name).is_file():
                return str(directory / name)
    return None


def with_allocator(choice: str, environ: Mapping[str, str]) -> dict[str, str] | None:
    """``environ`` with the allocator ``choice`` gives put first in ``LD_PRELOAD``; None when
    there is none to preload or it is already there (a process started under it)."""
    library = allocator_library(choice)
    preload = environ.get("LD_PRELOAD", "")
    if not library or library in preload.split(":"):
        return None
    return dict(environ) | {"LD_PRELOAD": ":".join(p for p in (library, preload) if p)}


def worker_env(
    settings: Settings, *, gpu: int | None, threads: int, gpus: Sequence[int] = ()
) -> dict[str, str]:
    """A local worker's environment; ``gpus``: the machine's GPUs when each worker has its own
    (a job asking for several devices borrows them, ``api.runtime.devices``)."""
    env = dict(os.environ)
    if gpu is None:
        env = with_allocator(settings.allocator, env) or env
    env |= {
        "RESKD_ARTIFACT_ROOT": str(settings.artifact_root.resolve()),
        "RESKD_DATABASE_URL": settings.url,
        "RESKD_LEASE_SECONDS": str(settings.lease_seconds),
        "RESKD_HEARTBEAT_SECONDS": str(settings.heartbeat_seconds),
        "RESKD_POLL_SECONDS": str(settings.poll_seconds),
        "OMP_NUM_THREADS": str(threads),  # CPU workers share the cores without oversubscribing
        "RESKD_MAX_ATTEMPTS": str(settings.max_attempts),
    }
    if settings.worker_memory_bytes is not None:
        env["RESKD_WORKER_MEMORY_BYTES"] = str(settings.worker_memory_bytes)
    if gpu is not None:
        env |= {"CUDA_VISIBLE_DEVICES": str(gpu), "RESKD_DEVICE": "cuda"}
        if gpus:
            env[GPUS_ENV] = ",".join(str(g) for g in gpus)
    else:
        env["RESKD_DEVICE"] = "cpu" if settings.device == "auto" else settings.device
    return env


def visible_gpus() -> list[int]:
    try:
        import torch

        return list(range(torch.cuda.device_count()))
    except Exception:
        return []


def worker_specs(
    settings: Settings, n: int, gpus: list[int], cores: int
) -> list[tuple[int | None, int]]:
    """(GPU, CPU threads) of each of ``n`` local workers: GPUs round robin; the cores shared
    among the workers unless ``worker_threads`` says how many each gets."""
    threads = settings.worker_threads or max(1, cores // n)
    return [(gpus[i % len(gpus)] if gpus else None, threads) for i in range(n)]


@dataclass
class WorkerPool:
    """Worker processes, restarted when they die (a crashed or killed worker's job is reclaimed
    by whichever worker is free once its lease expires)."""

    settings: Settings
    count: int | None = None
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)

    def start(self) -> None:
        gpus = visible_gpus() if self.settings.device in ("auto", "cuda") else []
        n = self.count or self.settings.workers or max(len(gpus), 1)
        self._specs = worker_specs(self.settings, n, gpus, os.cpu_count() or 1)
        self._gpus = gpus if n <= len(gpus) else []  # one worker per GPU: they lend them
        self.processes = [self._spawn(i) for i in range(n)]
        threading.Thread(target=self._supervise, daemon=True).start()

    def _spawn(self, i: int) -> subprocess.Popen[bytes]:
        gpu, threads = self._specs[i]
        return subprocess.Popen(
            [
                sys.executable,
                "-m",
                "api.runtime.worker",
                "--name",
                f"{socket.gethostname()}:{os.getpid()}/worker-{i}",  # unique across pools
                "--parent",
                str(os.getpid()),
            ],
            env=worker_env(self.settings, gpu=gpu, threads=threads, gpus=self._gpus),
        )

    def describe_allocator(self) -> str:
        """``, allocator <library>`` when the CPU workers preload one, else nothing."""
        library = allocator_library(self.settings.allocator)
        cpu = any(gpu is None for gpu, _ in getattr(self, "_specs", []))
        return f", allocator {library}" if library and cpu else ""

    def _supervise(self) -> None:
        while not self._stop.wait(1.0):
            for i, p in enumerate(self.processes):
                if p.poll() == EXIT_DATABASE_GONE:
                    continue  # restarting would open a new, empty database in its place
                if p.poll() is not None:
                    print(
                        f"worker {i} (pid {p.pid}) exited ({p.returncode}); restarting", flush=True
                    )
                    self.processes[i] = self._spawn(i)

    def stop(self) -> None:
        self._stop.set()
        for p in self.processes:
            p.terminate()
        deadline = time.time() + 10
        for p in self.processes:
            try:
                p.wait(timeout=max(0.1, deadline - time.time()))
            except subprocess.TimeoutExpired:
                p.kill()


def ending_streams(server: Any, streams: Any) -> None:
    """On the signal that stops ``server`` (a ``uvicorn.Server``), end ``streams``' open event
    streams too (an ``api.http.streams.Streams``): the graceful shutdown waits for open
    responses, and a stream of a running job would hold it until the job ends."""
    stop = server.handle_exit

    def handle_exit(sig: int, frame: Any) -> None:
        streams.close_soon()
        stop(sig, frame)

    server.handle_exit = handle_exit


def uvicorn_options(settings: Settings) -> dict[str, Any]:
    """uvicorn's options from ``settings``: the HTTP protocol bounded by ``connections`` (the
    most connections, the header and idle timeouts, the header size), and forwarded headers
    believed only from the ``trusted_proxies`` (by default from nobody: uvicorn would believe
    any client on 127.0.0.1, which could then pose as many clients)."""
    from api.runtime.connections import Bounds, bounded_protocol

    bounds = Bounds(
        max_connections=settings.max_connections,
        header_seconds=settings.request_header_seconds,
        idle_seconds=settings.request_idle_seconds,
        max_header_bytes=settings.max_header_bytes,
    )
    return {
        "host": settings.host,
        "port": settings.port,
        "log_level": "warning",
        "timeout_graceful_shutdown": SHUTDOWN_GRACE_SECONDS,
        "http": bounded_protocol(bounds),
        "limit_concurrency": settings.max_connections,
        "timeout_keep_alive": settings.keep_alive_seconds,
        "proxy_headers": bool(settings.trusted_proxies),
        "forwarded_allow_ips": list(settings.trusted_proxies) or None,
    }


def serve(settings: Settings, *, workers: int | None = None) -> None:
    import uvicorn

    from db.session import Database

    if settings.host not in LOCAL_HOSTS and not settings.token:
        raise ValueError(
            f"host: {settings.host} would expose the service without auth; set a token "
            "(--token or RESKD_TOKEN) or bind 127.0.0.1"
        )
    # The database is migrated and the workers started before the API's imports (8 s on a
    # 2-core AMD EPYC: FastAPI, and torch through the configs' models): a worker's own imports
    # (7 s) run beside them, not after them, and the first job starts that much sooner.
    database = Database(settings.url)
    database.migrate()
    database.dispose()
    executor: WorkerPool | RayDispatcher
    if settings.ray_address:  # jobs run as Ray tasks on the cluster
        from api.runtime.ray_dispatch import RayDispatcher

        executor = RayDispatcher(settings, capacity=workers)
        executor.start_thread()
        running = executor.describe()
    else:
        executor = WorkerPool(settings, workers)
        if workers != 0:
            executor.start()
        running = f"{len(executor.processes)} local worker(s){executor.describe_allocator()}"
    try:
        from api.http.main import create_app

        app = create_app(settings)
        print(
            f"reskd service on http://{settings.host}:{settings.port} (database {settings.url}, "
            f"artifacts {settings.artifact_root}, {running})",
            flush=True,
        )
        server = uvicorn.Server(uvicorn.Config(app, **uvicorn_options(settings)))
        ending_streams(server, app.state.streams)
        # the start-up's objects (torch, the app, the schemas) out of the collector's walks: a
        # full collection over them stalled every request at once for about 200 ms
        gc.collect()
        gc.freeze()
        server.run()
    finally:
        executor.stop()
