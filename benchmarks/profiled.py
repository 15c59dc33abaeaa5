"""Run a module under cProfile, every thread of it (cProfile alone sees only the main thread, and
FastAPI runs sync routes on a thread pool), on each thread's CPU clock: what a request costs the
cores, not the time it waited for them. SIGUSR1 clears what was gathered so far (a server's
start and warm-up); the threads' profiles are merged into one file when the module returns (a
server: when SIGINT or SIGTERM stops it).

    python -m benchmarks.profiled OUT.prof MODULE [ARGS...]

``top`` prints the functions of such a file that took the most time, per request.
"""

from __future__ import annotations

import cProfile
import pstats
import runpy
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

SITE = "site-packages/"
ROOT = Path(__file__).resolve().parents[1]


def _profiled(module: str, out: Path) -> None:
    profiles: list[cProfile.Profile] = []
    lock = threading.Lock()

    def start(*_: Any) -> None:  # a new thread's first event: its own profiler from now on
        profile = cProfile.Profile(time.thread_time)
        with lock:
            profiles.append(profile)
        profile.enable()

    def clear(*_: Any) -> None:
        with lock:
            for profile in [main, *profiles]:
                profile.clear()

    def stop(*_: Any) -> None:  # uvicorn re-raises the signal that stopped it, once it has
        raise SystemExit(0)

    threading.setprofile(start)
    signal.signal(signal.SIGUSR1, clear)
    signal.signal(signal.SIGTERM, stop)
    main = cProfile.Profile(time.thread_time)
    main.enable()
    try:
        runpy.run_module(module, run_name="__main__", alter_sys=True)
    except SystemExit:
        pass
    finally:
        main.disable()
        threading.setprofile(None)
        stats = pstats.Stats(main)
        with lock:
            for profile in profiles:
                stats.add(profile)
        stats.dump_stats(out)


def _where(path: str) -> str:
    if SITE in path:
        return path.split(SITE, 1)[-1]
    return str(Path(path).relative_to(ROOT)) if Path(path).is_relative_to(ROOT) else path


def top(path: Path, *, requests: int, limit: int = 25) -> str:
    """Where the time of the profile at ``path`` went, in ms per request (``requests`` made
    while it ran): the project's functions with the most cumulative time (the route, its
    queries: what the layers below cost it), then any function with the most time of its own
    (the database driver, pydantic, the ASGI stack)."""
    stats = pstats.Stats(str(path))
    table: dict[Any, Any] = stats.stats  # type: ignore[attr-defined]
    ours = {k: v for k, v in table.items() if SITE not in k[0] and Path(k[0]).is_relative_to(ROOT)}
    lines = ["    cum ms   own ms  calls/r  function"]
    for title, rows, column in (
        ("the project's functions by cumulative time", ours, 3),
        ("all functions by own time", table, 2),
    ):
        lines.append(f"-- {title}, ms per request --")
        ranked = sorted(rows.items(), key=lambda item: item[1][column], reverse=True)[:limit]
        for (file, line, name), (_, calls, own, cumulative, _) in ranked:
            lines.append(
                f"{1000 * cumulative / requests:8.2f} {1000 * own / requests:8.2f} "
                f"{calls / requests:8.1f}  {name} ({_where(file)}:{line})"
            )
    return "\n".join(lines)


if __name__ == "__main__":
    out_path, module_name, *rest = sys.argv[1:]
    sys.argv = [module_name, *rest]
    _profiled(module_name, Path(out_path))
