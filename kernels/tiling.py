"""The tile skeleton shared by the tiled kernels: grouped tile order, M-bucket configs, [rows, K] views of x.

The tensor-core kernels of W4A16 (int4/tc.py) and ternary (ternary/tc.py) share one launch: swap-AB tiles
(grid over N-tiles x M-tiles), an M-bucketed config table and whole scale groups per K step (`tc_gsub`); the
format-specific part is only the in-register weight decode inside each kernel.
"""
from __future__ import annotations

import triton
import triton.language as tl


@triton.jit
def grouped_tile(pid, M, N, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, GROUP_M: tl.constexpr):
    """(pid_m, pid_n) in grouped order: GROUP_M row-tiles share each weight tile while it is in L2."""
    num_m = tl.cdiv(M, BLOCK_M)
    num_n = tl.cdiv(N, BLOCK_N)
    per_group = GROUP_M * num_n
    first_m = (pid // per_group) * GROUP_M
    gm = min(num_m - first_m, GROUP_M)
    return first_m + (pid % per_group) % gm, (pid % per_group) // gm


def pick(table, M: int) -> dict:
    """The config of the first (max M, config) bucket that holds M (the last one otherwise)."""
    for max_m, cfg in table:
        if M <= max_m:
            return cfg
    return table[-1][1]


def rows(x):
    """x [..., K] as [rows, K] with unit stride along K (a copy only when needed)."""
    x2 = x.reshape(-1, x.shape[-1])
    return x2 if x2.stride(-1) == 1 else x2.contiguous()


def tc_gsub(G: int, K: int, block_k: int) -> int:
    """Sub-group width of a swap-AB tensor-core tile: min(group, BLOCK_K); the tile must hold whole groups."""
    gsub = block_k if G >= K else min(G, block_k)
    assert block_k % gsub == 0 and (G <= block_k or G % block_k == 0 or G >= K), (G, block_k)
    return gsub


def tc_grid(N: int, M: int, cfg: dict):
    """Grid of the swap-AB kernels: axis 0 over N-tiles, axis 1 over M-tiles."""
    return (triton.cdiv(N, cfg["BLOCK_N"]), triton.cdiv(M, cfg["BLOCK_M"]))


LAUNCH_OPTIONS = ("num_warps", "num_stages")


def split_launch(cfg: dict):
    """(constexprs, launch options) of a config dict such as TC_CONFIGS' entries."""
    return ({k: v for k, v in cfg.items() if k not in LAUNCH_OPTIONS},
            {k: v for k, v in cfg.items() if k in LAUNCH_OPTIONS})
