"""One training on several devices: data parallelism across processes, one per device.

``TrainConfig.devices`` (a run config's ``devices``) above 1 makes ``distill.train.fit`` start
that many processes (``torch.multiprocessing``, the spawn method) that form one process group:
NCCL on CUDA devices (rank r on the r-th device its worker reserved), gloo on CPUs. Each rank
trains a replica of the task on its share of every global batch (``batch_size`` is the global
batch: rank r takes samples r, r + N, ... of it); after each backward pass the gradients are
summed across ranks weighted by each rank's share of the batch (:func:`reduce_gradients`), so
every replica takes the same step, the one a single process takes on the whole batch. This is
what ``DistributedDataParallel`` computes, done once per step over the optimised parameters
rather than by its hooks on a wrapped module: the search's architecture steps take their
gradient with ``torch.autograd.grad`` (which DDP's hooks do not see) and switch
``requires_grad`` per step, and its architecture parameters are reduced the same way, so they
stay replicated and identical on every rank.

What differs from one process: batch-norm statistics are each rank's own share's (as in DDP
without ``SyncBatchNorm``), so a stage trained on N > 1 devices is stored under its own key.

Rank 0 writes the epoch checkpoints (the others read the same file when resuming) and reports
the run: its progress goes to the launching process through a queue, where the caller's
callbacks and the stage observer see it as they see a one-process run; a cancel there stops the
ranks. A script that forms the group itself (under ``torchrun``,
``torch.distributed.init_process_group()`` reads its environment) calls ``fit`` in every rank,
and ``fit`` trains as that rank (on CUDA, the device of its ``LOCAL_RANK``); writing anything
else once is then the script's own business.
"""

from __future__ import annotations

import os
import pickle
import socket
import tempfile
import traceback
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import Tensor, nn

# The devices a launch may use, as ``CUDA_VISIBLE_DEVICES`` names them (set by the process that
# reserved them, e.g. a service worker); unset: the first N visible.
DEVICES_ENV = "RESKD_DEVICE_IDS"


@dataclass(frozen=True)
class World:
    """This process's place in the process group (rank 0 of 1 outside one)."""

    rank: int = 0
    size: int = 1

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def share(self) -> slice:
        """This rank's samples of a global batch: positions rank, rank + size, ..."""
        return slice(self.rank, None, self.size)


def world() -> World:
    if dist.is_available() and dist.is_initialized():
        return World(dist.get_rank(), dist.get_world_size())
    return World()


def reduce_gradients(params: Sequence[nn.Parameter], weight: float) -> None:
    """Every gradient of ``params`` replaced by the sum over ranks of ``weight`` (this rank's
    share of the global batch) times it: with per-rank mean losses, the global batch's mean
    gradient. One all-reduce for all of them; parameters without a gradient are left alone (every
    rank runs the same network, so they are the same on every rank)."""
    if world().size == 1:
        return
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return
    flat = torch.cat([g.reshape(-1) for g in grads]).mul_(weight)
    dist.all_reduce(flat)
    offset = 0
    for g in grads:
        g.copy_(flat[offset : offset + g.numel()].view_as(g))
        offset += g.numel()


def all_sum(values: Sequence[float], device: torch.device) -> list[float]:
    """``values`` summed over the ranks (themselves outside a process group)."""
    if world().size == 1:
        return list(values)
    t = torch.tensor(list(values), dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return [float(v) for v in t]


def rank_device(device: torch.device) -> torch.device:
    """A rank's device: the rank-th CUDA device of those visible, or the CPU."""
    if device.type == "cuda":
        rank = int(os.environ.get("LOCAL_RANK", world().rank))  # torchrun sets it per node
        torch.cuda.set_device(rank)
        return torch.device("cuda", rank)
    return device


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@dataclass(frozen=True)
class Launch:
    """How the ranks of one launch meet: the rendezvous, the backend, the devices."""

    size: int
    port: int
    backend: str
    device_ids: str | None  # CUDA_VISIBLE_DEVICES of the ranks (None: as inherited)
    results: Path  # where each rank writes what it returns (rank-<r>.pkl)


def _rank_main(rank: int, launch: Launch, call: bytes, events: Any) -> None:
    """A rank's process: join the group, run ``fn(*args, events)`` (``call``, pickled), write
    its result (or its error) for the launcher, leave the group."""
    if launch.device_ids is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = launch.device_ids
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(launch.port))
    if launch.backend == "gloo":  # the ranks share the cores rather than each taking them all
        torch.set_num_threads(max(1, torch.get_num_threads() // launch.size))
    outcome: tuple[str, Any]
    try:
        fn, args = pickle.loads(call)  # the rank's own copy (no memory shared with the others)
        dist.init_process_group(launch.backend, rank=rank, world_size=launch.size)
        outcome = ("ok", fn(*args, events))
    except BaseException as exc:  # reported to the launcher, which raises it
        outcome = ("error", _picklable(exc))
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
    tmp = launch.results / f"rank-{rank}.tmp"
    tmp.write_bytes(pickle.dumps(outcome))
    tmp.replace(launch.results / f"rank-{rank}.pkl")
    if outcome[0] == "error":
        (launch.results / f"rank-{rank}.failed").touch()


def _picklable(exc: BaseException) -> BaseException:
    try:
        pickle.loads(pickle.dumps(exc))
        return exc
    except Exception:
        return RuntimeError(f"{type(exc).__name__}: {exc}\n{traceback.format_exc()}")


def launch(
    fn: Callable[..., Any],
    args: tuple[Any, ...],
    *,
    devices: int,
    cuda: bool,
    on_event: Callable[[Any], None] = lambda _: None,
) -> list[Any]:
    """Run ``fn(*args, events)`` in ``devices`` processes forming one group (NCCL with ``cuda``,
    else gloo) and return what each rank returned, by rank. ``events`` is a queue a rank may put
    picklable messages on; the launcher passes each to ``on_event`` as it arrives (an exception
    there stops every rank and propagates). A rank that raised stops the others; its exception
    is raised here."""
    if cuda and torch.cuda.device_count() < devices and DEVICES_ENV not in os.environ:
        raise ValueError(
            f"devices: {devices} asked for, {torch.cuda.device_count()} CUDA device(s) visible"
        )
    context = mp.get_context("spawn")
    events = context.SimpleQueue()
    with tempfile.TemporaryDirectory(prefix="reskd-ranks-") as tmp:
        spec = Launch(
            devices, free_port(), "nccl" if cuda else "gloo", os.environ.get(DEVICES_ENV),
            Path(tmp),
        )  # fmt: skip
        # pickled here, so that each rank unpickles its own copy: through torch's reductions
        # the ranks would share the parameters' memory and each step would apply once per rank
        call = pickle.dumps((fn, args))
        ranks = mp.start_processes(
            _rank_main, args=(spec, call, events), nprocs=devices, join=False,
            start_method="spawn",
        )  # fmt: skip
        try:
            _relay(ranks, events, on_event, spec)
        except BaseException:
            for p in ranks.processes:
                if p.is_alive():
                    p.terminate()
            for p in ranks.processes:
                p.join()
            raise
        return _results(spec)


def _relay(ranks: Any, events: Any, on_event: Callable[[Any], None], spec: Launch) -> None:
    """Pass the ranks' events on until every rank is done; a rank's error stops the rest."""
    done = False
    while not done:
        done = ranks.join(timeout=0.05)
        while not events.empty():
            on_event(events.get())
        if any((spec.results / f"rank-{r}.failed").is_file() for r in range(spec.size)):
            _raise_error(spec)


def _results(spec: Launch) -> list[Any]:
    _raise_error(spec)
    results = []
    for rank in range(spec.size):
        path = spec.results / f"rank-{rank}.pkl"
        if not path.is_file():
            raise RuntimeError(f"rank {rank} of {spec.size} ended without a result")
        results.append(pickle.loads(path.read_bytes())[1])
    return results


def _raise_error(spec: Launch) -> None:
    for rank in range(spec.size):
        if (spec.results / f"rank-{rank}.failed").is_file():
            raise pickle.loads((spec.results / f"rank-{rank}.pkl").read_bytes())[1]


def shares(n: int, batch_size: int) -> Iterable[int]:
    """The sizes of the global batches of an epoch over ``n`` samples."""
    return (min(batch_size, n - start) for start in range(0, n, batch_size))


def local(t: Tensor) -> Tensor:
    """This rank's samples of a global batch ``t`` (the whole of it outside a group)."""
    w = world()
    return t if w.size == 1 else t[w.share]
