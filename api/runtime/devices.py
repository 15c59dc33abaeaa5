"""The GPUs of one machine among its local workers: a job that asks for N devices runs on its
worker's GPU and N - 1 borrowed from the others.

Each local worker of ``reskd serve`` is bound to one GPU (``CUDA_VISIBLE_DEVICES``) and learns the
machine's GPUs from ``RESKD_GPUS``. A GPU is held through a lock file under the artifact root
(``devices/gpu-<id>.lock``, an ``flock``, released by the kernel when its holder dies): a worker
holds its own while it claims and runs a job (:meth:`DeviceLocks.own`); a job asking for more
devices (``devices: N``) borrows N - 1 more as their workers go idle (:meth:`DeviceLocks.borrow`,
marking them wanted so their workers claim nothing meanwhile), and its ranks then see those
GPUs (``distill.distributed.DEVICES_ENV``). A worker started with several GPUs visible and no
``RESKD_GPUS`` (``reskd worker`` by hand, a Ray task given N GPUs) owns what it sees.
"""

from __future__ import annotations

import fcntl
import os
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import IO

GPUS_ENV = "RESKD_GPUS"  # the machine's GPUs, as a pool's workers see them (e.g. "0,1,2,3")


def _ids(text: str | None) -> list[str]:
    return [t.strip() for t in (text or "").split(",") if t.strip()]


class DeviceLocks:
    """The lock files of the GPUs of one machine (``root``: a directory every worker shares)."""

    def __init__(self, root: Path, environ: dict[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        self.root = root
        self.mine = _ids(env.get("CUDA_VISIBLE_DEVICES"))
        self.machine = _ids(env.get(GPUS_ENV))

    def _open(self, gpu: str) -> IO[bytes]:
        self.root.mkdir(parents=True, exist_ok=True)
        return (self.root / f"gpu-{gpu}.lock").open("ab")

    def _try(self, gpu: str) -> IO[bytes] | None:
        handle = self._open(gpu)
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            return None
        return handle

    @contextmanager
    def own(self) -> Iterator[bool]:
        """Hold this worker's GPU while inside; False (and nothing held) when a job of another
        worker has borrowed it or wants it, so this worker claims nothing now."""
        if len(self.mine) != 1 or not self.machine:
            yield True
            return
        wanted = (self.root / f"gpu-{self.mine[0]}.wanted").exists()
        handle = None if wanted else self._try(self.mine[0])
        try:
            yield handle is not None
        finally:
            if handle is not None:
                handle.close()

    @contextmanager
    def borrow(self, n: int, *, waiting: Callable[[], None], poll: float = 1.0) -> Iterator[None]:
        """Inside: ``n`` GPUs, this worker's and ``n - 1`` borrowed ones, named in
        ``DEVICES_ENV`` for the ranks. Waits for idle GPUs (``waiting()`` between polls may
        raise, a cancel); a worker without the machine's list borrows nothing."""
        if n <= 1 or not self.machine or len(self.mine) != 1:
            yield
            return
        others = [g for g in self.machine if g != self.mine[0]]
        if len(others) < n - 1:
            raise ValueError(f"devices: {n} asked for; this machine has {len(self.machine)} GPU(s)")
        from distill.distributed import DEVICES_ENV  # torch: not for the service's start

        with ExitStack() as stack:
            held = self._gather(others, n - 1, stack, waiting, poll)
            previous = os.environ.get(DEVICES_ENV)
            os.environ[DEVICES_ENV] = ",".join([self.mine[0], *held])
            try:
                yield
            finally:
                if previous is None:
                    os.environ.pop(DEVICES_ENV, None)
                else:
                    os.environ[DEVICES_ENV] = previous

    def _gather(
        self,
        others: list[str],
        count: int,
        stack: ExitStack,
        waiting: Callable[[], None],
        poll: float,
    ) -> list[str]:
        """``count`` of ``others`` held (on ``stack``), taken as they become free; meanwhile
        they are marked wanted, so that their workers claim nothing new."""
        held: list[str] = []
        marks = [self.root / f"gpu-{g}.wanted" for g in others]
        self.root.mkdir(parents=True, exist_ok=True)
        try:
            for mark in marks:
                mark.touch()
            while len(held) < count:
                for gpu in others:
                    if gpu not in held and len(held) < count and (handle := self._try(gpu)):
                        stack.callback(handle.close)
                        held.append(gpu)
                if len(held) < count:
                    waiting()
                    time.sleep(poll)
        finally:
            for mark in marks:
                mark.unlink(missing_ok=True)
        return held
