"""What one job may ask of a worker: the size of its networks, counted at submit on PyTorch's
meta device (shapes without storage: a network of billions of parameters costs no memory to
count), against ``max_job_params`` and ``max_job_mflops``; and the address space of a worker
process (``worker_memory_bytes``), whose exhaustion fails the job with a message naming it.

Every field of a config is bounded alone (a width, a channel count, a number of cells), but the
fields compose: a zoo network at width 64 or a genotype network of 64 cells of 512 channels is a
valid config of billions of parameters. The count is the one a worker would build: zoo and
genotype networks as they are, a searched network as the supernets its strategy plans. A teacher
from a library or a program file is left out (its size is the library's or the file's, not the
config's).
"""

from __future__ import annotations

import resource
from collections.abc import Iterator

import torch
from torch import nn

from distill.config import ConfigError, Loc
from search.config import GenotypeNet, RunConfig, SearchedNet, ZooNet, spec_of
from search.run import shape_for
from search.strategies import strategy_for
from space.numbers import count, mflops

# PyTorch's host allocator's words; a device's (torch.OutOfMemoryError) is reported as itself, and
# inside a training as distill.memory.DeviceOutOfMemory, which names the batch size to lower
OUT_OF_MEMORY = ("can't allocate memory",)


def forward_macs(model: nn.Module, input_shape: tuple[int, ...]) -> int:
    """Multiply-accumulates of one sample's forward pass through ``model``'s convolutions and
    linear layers (what dominates a CNN's cost), on the meta device: no memory, no arithmetic."""
    total = 0

    def hook(module: nn.Module, _: object, out: torch.Tensor) -> None:
        nonlocal total
        if isinstance(module, nn.Conv2d):
            kh, kw = module.kernel_size
            total += out.numel() * (module.in_channels // module.groups) * kh * kw
        elif isinstance(module, nn.Linear):
            total += out.numel() * module.in_features

    layers = [m for m in model.modules() if isinstance(m, nn.Conv2d | nn.Linear)]
    handles = [m.register_forward_hook(hook) for m in layers]
    try:
        with torch.no_grad():
            model.eval()(torch.zeros(1, *input_shape, device="meta"))
    finally:
        for handle in handles:
            handle.remove()
    return total


def network_sizes(config: RunConfig) -> Iterator[tuple[Loc, str, int, float]]:
    """(where in the config, which network, parameters, MFLOPs) of each network the config
    sets the size of; a network given twice (a repeated res-student) is counted once."""
    info = config.data_info()
    seen: set[str] = set()
    for loc, net in config.nets():
        key = net.model_dump_json()
        if key in seen or not isinstance(net, ZooNet | GenotypeNet | SearchedNet):
            continue
        seen.add(key)
        with torch.device("meta"):
            if isinstance(net, SearchedNet):
                shape = shape_for(net.search, info)
                for plan in strategy_for(net.search).plan(net.search, shape):
                    supernet = plan.build(shape)
                    yield (
                        (*loc, "search"),
                        f"the search's supernet C{plan.channels}L{plan.layers}",
                        sum(p.numel() for p in supernet.parameters()),
                        forward_macs(supernet, info.input_shape) / 1e6,
                    )
                continue
            spec = spec_of(net, info)
            model = spec.build()
        params = sum(p.numel() for p in model.parameters())
        yield loc, spec.label, params, forward_macs(model, info.input_shape) / 1e6


def check_size(config: RunConfig, *, max_params: int, max_mflops: float) -> None:
    """A :class:`ConfigError` at the first network over a cap, naming it and the cap."""
    for loc, label, params, cost in network_sizes(config):
        if params > max_params:
            raise ConfigError.at(
                loc,
                f"{label} has {count(params)} parameters, more than the {count(max_params)} "
                "a network of a job may have (max_job_params)",
            )
        if cost > max_mflops:
            raise ConfigError.at(
                loc,
                f"{label} costs {mflops(cost)} MFLOPs, more than the {mflops(max_mflops)} a "
                "network of a job may cost (max_job_mflops)",
            )


def limit_memory(max_bytes: int | None) -> None:
    """Cap this process's address space (a worker's, before it claims a job): an allocation
    beyond it fails (``MemoryError``, or PyTorch's "can't allocate memory") instead of taking
    the machine's memory."""
    if max_bytes is not None:
        resource.setrlimit(resource.RLIMIT_AS, (max_bytes, max_bytes))


def out_of_memory(exc: BaseException) -> bool:
    """Whether ``exc`` is an allocation that failed (Python's or PyTorch's)."""
    return isinstance(exc, MemoryError) or (
        isinstance(exc, RuntimeError) and any(w in str(exc) for w in OUT_OF_MEMORY)
    )


def memory_error(limit: int | None) -> str:
    """A job's error when it ran out of memory under the worker's ``limit``."""
    if limit is None:
        return "MemoryError: the job needed more memory than its worker's machine had"
    return (
        f"MemoryError: the job needed more than its worker's memory limit of "
        f"{limit / (1 << 30):.2f} GiB (worker_memory_bytes, RESKD_WORKER_MEMORY_BYTES)"
    )
