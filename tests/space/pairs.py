"""A per-edge reference supernet and a fused one that must compute the same thing."""

from __future__ import annotations

import torch

from space.supernet import Supernet


def same_random_architecture(reference: Supernet, fused: Supernet) -> None:
    """Copies ``reference``'s weights into ``fused``, then gives both the same architecture
    parameters drawn from a standard normal: far from uniform, so that every candidate's term
    counts in what the two are compared on."""
    fused.copy_from(reference)
    with torch.no_grad():
        for a in reference.arch_parameters():
            a.normal_()
    fused.alphas.load_state_dict(reference.alphas.state_dict())
