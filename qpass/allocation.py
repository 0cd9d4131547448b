"""Bits per site under a budget: how many bits a weight costs (codes plus group scales/zeros), and the greedy
allocation over a per-site sensitivity table (error at each candidate width) that meets an average-bits target.

Counting (docs/mixed_precision.md): a b-bit site costs b bits per weight plus, per (row, group), a 16-bit scale
and, when asymmetric, a b-bit zero point (the GPTQ / compressed-tensors packing); 16 bits: the FP16 weight, no
scales. `storage_bits` counts the container the kernel reads instead (2/3-bit codes live in int4 nibbles).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

FULL = 16  # "quantized" at 16 bits: the site stays in full precision
CONTAINER = {2: 4, 3: 4, 4: 4, 5: 8, 6: 8, 7: 8, 8: 8}  # the kernel's code container per width


def bits_per_weight(bits: int, in_features: int, group_size: int | None, symmetric: bool, storage: bool = False) -> float:
    """Average bits per weight of one [out, in] site at `bits` (scales and zeros included)."""
    if bits >= FULL:
        return float(FULL)
    code = CONTAINER[bits] if storage else bits
    groups = math.ceil(in_features / group_size) if group_size else 1
    per_group = 16 + (0 if symmetric else code)
    return code + groups * per_group / in_features


@dataclass
class SiteCost:
    """One site for the allocator: its weight count and, per candidate width, (bits per weight, error)."""

    name: str
    weights: int
    options: dict[int, tuple[float, float]]  # bits -> (bits per weight, sensitivity)


def allocate(sites: list[SiteCost], target_bits: float) -> dict[str, int]:
    """Bits per site with Σ weights·bpw ≤ target_bits·Σ weights: every site starts at its cheapest width, then
    the upgrade with the largest error reduction per extra bit (over all sites and all wider candidates) that
    still fits is taken, until none fits. ValueError when even the cheapest widths exceed the budget."""
    total = sum(s.weights for s in sites)
    budget = target_bits * total
    choice = {s.name: min(s.options, key=lambda b: s.options[b][0]) for s in sites}
    spent = sum(s.weights * s.options[choice[s.name]][0] for s in sites)
    if spent > budget * (1 + 1e-12):
        raise ValueError(f"target_bits {target_bits}: even the narrowest candidate widths average "
                         f"{spent / total:.4f} bits per weight (scales and zeros included)")
    while True:
        best = None
        for s in sites:
            bpw0, err0 = s.options[choice[s.name]]
            for b, (bpw, err) in s.options.items():
                extra = s.weights * (bpw - bpw0)
                if extra <= 0 or spent + extra > budget or err >= err0:
                    continue
                gain = (err0 - err) / extra
                if best is None or gain > best[0]:
                    best = (gain, s.name, b, extra)
        if best is None:
            return choice
        _, name, b, extra = best
        choice[name] = b
        spent += extra


def average_bits(sites: list[SiteCost], choice: dict[str, int]) -> float:
    total = sum(s.weights for s in sites)
    return sum(s.weights * s.options[choice[s.name]][0] for s in sites) / total
