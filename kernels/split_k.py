"""Split-K reduced inside the kernel: one launch, no zeroed buffer, no epilogue kernel.

At a few rows a GEMM's output tiles alone leave most SMs idle, so the tiled kernels (int4/tc.py, ternary/tc.py,
int8/gemm.py) split K across programs. The partial sums used to be added with atomics into a zeroed fp32 buffer
that a second kernel cast into the output (with the bias): three launches per GEMM (the zero fill, the tile, the
cast), which under a CUDA graph cost about as much GPU time as the split saved at K = 4096, and eagerly three
host launches.

Here each program stores its fp32 partial tile in its own slice of a workspace [splits, M, N] (plain stores; the
workspace is never zeroed), then takes a ticket from its output tile's counter. The program that draws the last
ticket sums the other slices (read from L2) onto its own partial, adds the bias, writes the output and puts the
counter back to zero, so the counters are zero between launches and need no per-call reset: they are allocated
once per (device, stream) (`counters`). The ordering is CUTLASS's semaphore: a CTA barrier, then one thread's
acq_rel atomic (release covers the whole CTA's stores: PTX release is cumulative), and the last program's
acquire before its loads, which bypass L1 (`.cg`).

Launches on one stream run in order, so every plan on that stream can share its counters; another stream gets its
own (a CUDA-graph capture stream included: there the zero fill is captured too and reruns on each replay,
harmlessly).
"""
from __future__ import annotations

import math

import torch
import triton
import triton.language as tl

from .launch import TENSOR, bind
from .tiling import by_col, by_row, cdiv, tile_store

COUNTERS_PER_STREAM = 1 << 16  # output tiles of one launch, at most (checked when a plan is bound)
_COUNTERS: dict = {}  # (device index, raw stream) -> int32 [COUNTERS_PER_STREAM], all zero between launches


def counters(device: torch.device) -> torch.Tensor:
    """The tile counters of the current stream on `device` (allocated zeroed on its first use)."""
    if device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        key = (index, torch._C._cuda_getCurrentRawStream(index))
    else:  # the interpreter (CPU tensors): one program at a time
        key = (str(device), None)
    c = _COUNTERS.get(key)
    if c is None:
        c = _COUNTERS[key] = torch.zeros(COUNTERS_PER_STREAM, dtype=torch.int32, device=device)
    return c


def check_tiles(tiles: int) -> None:
    torch._check_value(tiles <= COUNTERS_PER_STREAM, lambda: (
        f"split-K: {tiles} output tiles in one launch, more than the {COUNTERS_PER_STREAM} tile counters"))


def workspace(splits: int, M: int, N: int, device) -> torch.Tensor:
    """The per-call fp32 partial sums [splits, M, N] (never read before written: no fill)."""
    return torch.empty(splits, M, N, dtype=torch.float32, device=device)


@triton.jit
def split_k_store(acc, ws_ptr, cnt_ptr, tile, split, n_split, b_ptr, y_ptr, offs_n, offs_m, n_mask, m_mask, M, N,
                  stride_ym, HAS_BIAS: tl.constexpr, SWAP: tl.constexpr):
    """This program's fp32 partial of output tile `tile` (`acc`, oriented as tiling.tile_zeros) for K split
    `split` of `n_split`: stored in the workspace; the last of the tile's programs to finish writes
    y[offs_m, offs_n] = the sum of all splits (+ bias[offs_n]) in y's dtype and resets the tile's counter."""
    rows = by_col(offs_m, SWAP) * N + by_row(offs_n, SWAP)
    mask = by_row(n_mask, SWAP) & by_col(m_mask, SWAP)
    tl.store(ws_ptr + split * M * N + rows, acc, mask=mask)
    tl.debug_barrier()  # every thread's partial is stored before the ticket is taken (release covers them)
    ticket = tl.atomic_add(cnt_ptr + tile, 1, sem="acq_rel", scope="gpu")
    tl.debug_barrier()
    if ticket == n_split - 1:  # the last: the other splits' partials are visible (acquire) in L2
        for s in range(0, n_split):
            if s != split:
                acc += tl.load(ws_ptr + s * M * N + rows, mask=mask, other=0.0, cache_modifier=".cg")
        if HAS_BIAS:
            acc += by_row(tl.load(b_ptr + offs_n, mask=n_mask, other=0.0).to(tl.float32), SWAP)
        tl.store(y_ptr + by_col(offs_m, SWAP) * stride_ym + by_row(offs_n, SWAP), acc.to(y_ptr.dtype.element_ty),
                 mask=mask)
        tl.atomic_xchg(cnt_ptr + tile, 0, sem="relaxed", scope="gpu")  # zero for the next launch on this stream


@triton.jit
def oriented_store(acc, ws_ptr, cnt_ptr, b_ptr, y_ptr, offs_n, offs_m, n_mask, m_mask, M, N, stride_ym,
                   HAS_BIAS: tl.constexpr, SPLIT: tl.constexpr, SWAP: tl.constexpr):
    """The output of a tile program on the grid (N tiles, M tiles, K splits) of `split_k_plan`: stored directly
    (+ bias), or with SPLIT through `split_k_store`."""
    if SPLIT:
        tile = tl.program_id(0) + tl.program_id(1) * tl.num_programs(0)
        split_k_store(acc, ws_ptr, cnt_ptr, tile, tl.program_id(2), tl.num_programs(2), b_ptr, y_ptr, offs_n, offs_m,
                      n_mask, m_mask, M, N, stride_ym, HAS_BIAS, SWAP)
    else:
        tile_store(acc, b_ptr, y_ptr, offs_n, offs_m, n_mask, m_mask, stride_ym, HAS_BIAS, SWAP)


def split_k_plan(kernel, x2, operands: tuple, bias, N: int, KW: int, NG: int, G: int, config: dict,
                 stride_ym: int, **meta):
    """A split-K tile kernel `kernel(x, *operands, b, y, ws, cnt, M, N, K, KW, NG, G, K_SPLIT, stride_xm, stride_ym,
    HAS_BIAS, SPLIT, SWAP, SCALE_AFTER, ..., BLOCK_M, BLOCK_N, BLOCK_K)` (int4/tc.py, ternary/tc.py) on x2 [M, K]
    for arguments with this metadata, decided and bound once: `call(x2, operands, bias, y)` with y [M, N] of row
    stride `stride_ym`. Each K step stays inside one weight group (BLOCK_K divides G); SPLIT_K > 1 (small M: N /
    BLOCK_N tiles alone leave SMs idle) splits K across programs, reduced in the kernel (`split_k_store`). x2 may
    be handed over as any tensor with its address and row stride (e.g. the [..., K] x that x2 views)."""
    M, K = x2.shape
    cfg = dict(config)
    split = cfg.pop("SPLIT_K", 1)
    cfg.setdefault("SWAP", True)
    cfg.setdefault("SCALE_AFTER", False)
    if G < K:
        cfg["BLOCK_K"] = math.gcd(cfg["BLOCK_K"], G)  # a K step never straddles two groups
    k_split = cdiv(cdiv(K, split), cfg["BLOCK_K"]) * cfg["BLOCK_K"]
    split = cdiv(K, k_split) if K else 1
    grid = (cdiv(N, cfg["BLOCK_N"]), cdiv(M, cfg["BLOCK_M"]), split)
    check_tiles(grid[0] * grid[1])
    bound = bind(kernel, grid, [TENSOR] * (len(operands) + 5) + [M, N, K, KW, NG, G, k_split, x2.stride(0),
                                                                   stride_ym],
                 dict(HAS_BIAS=bias is not None, SPLIT=split > 1, **cfg, **meta))
    device = x2.device

    def call(x2, operands, bias, y):
        b = bias if bias is not None else operands[-1]
        if split == 1:  # the workspace and counter slots get y: never read
            bound(x2, *operands, b, y, y, y)
        else:
            bound(x2, *operands, b, y, workspace(split, M, N, device), counters(device))
        return y
    return call
