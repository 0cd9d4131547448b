"""The tile skeleton shared by the tiled kernels: grouped tile order, M-bucket configs, [rows, K] views of x.

Two skeletons of "swap AB" tensor-core tiles (acc[N-tile, M-tile] = W_deq . X^T, so the weight tile fills the
>= 64-row slot of wgmma even for small M):
  * the split-K oriented tile of W4A16 (int4/tc.py) and ternary (ternary/tc.py): each K step inside one weight
    group, either orientation (`SWAP`), the x step (`x_step`), the dot (`oriented_dot`), per-row / per-column
    broadcasts (`by_row`, `by_col`), the store or split-K atomic add (`tile_store`) and the launch
    (`split_k_plan`: zeroed fp32 buffer and the bias after the last split);
  * the sub-grouped tile of W8A16 (int8/w8a16.py): tile offsets (`swap_ab_tile`, also used by the first), group
    scales per K step (`group_scales`), x load + dot (`swap_ab_step`), bias + transposed store (`swap_ab_store`),
    M-bucketed configs (`pick`, `tc_gsub`, `tc_grid`).
The @triton.jit helpers are inlined (the same code as written out in each kernel). The format-specific part is
only the in-register weight decode of each kernel's K loop (a separate helper per format, not a function passed as
a constexpr argument: plain calls are what every supported Triton and the interpreter take).
"""
from __future__ import annotations

import math

import torch
import triton
import triton.language as tl

from .launch import TENSOR, bind


def cdiv(a: int, b: int) -> int:
    """ceil(a / b) for the host side of a launch. triton.cdiv / next_power_of_2 are ConstexprFunctions since
    Triton 3.5: a host call costs several µs (an import and argument unwrapping each time), and a decode step
    makes hundreds of them."""
    return -(-a // b)


def next_pow2(n: int) -> int:
    """The smallest power of two >= n (1 for n <= 1), for the host side (see `cdiv`)."""
    return 1 if n <= 1 else 1 << (n - 1).bit_length()


@triton.jit
def grouped_tile(pid, M, N, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, GROUP_M: tl.constexpr):
    """(pid_m, pid_n) in grouped order: GROUP_M row-tiles share each weight tile while it is in L2."""
    num_m = tl.cdiv(M, BLOCK_M)
    num_n = tl.cdiv(N, BLOCK_N)
    per_group = GROUP_M * num_n
    first_m = (pid // per_group) * GROUP_M
    gm = min(num_m - first_m, GROUP_M)
    return first_m + (pid % per_group) % gm, (pid % per_group) // gm


@triton.jit
def swap_ab_tile(M, N, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
    """(offs_n, offs_m, n_mask, m_mask) of this program's [BLOCK_N, BLOCK_M] tile (grid `tc_grid`)."""
    offs_n = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_m = tl.program_id(1) * BLOCK_M + tl.arange(0, BLOCK_M)
    return offs_n, offs_m, offs_n < N, offs_m < M


@triton.jit
def group_scales(s_ptr, offs_n, n_mask, k0, G, NG, NSUB: tl.constexpr, GSUB: tl.constexpr):
    """[BLOCK_N, NSUB] fp32 per-(row, group) values (scales, zeros) of the NSUB groups of width GSUB from k0."""
    g = (k0 + tl.arange(0, NSUB) * GSUB) // G
    gmask = n_mask[:, None] & (g < NG)[None, :]
    return tl.load(s_ptr + offs_n[:, None] * NG + g[None, :], mask=gmask, other=0.0).to(tl.float32)


@triton.jit
def swap_ab_step(acc, w, x_ptr, offs_m, m_mask, k0, K, stride_xm, BLOCK_K: tl.constexpr):
    """acc += w [BLOCK_N, BLOCK_K] . x[offs_m, k0:k0 + BLOCK_K]^T (w cast to x's dtype)."""
    k = k0 + tl.arange(0, BLOCK_K)
    x = tl.load(x_ptr + offs_m[:, None] * stride_xm + k[None, :], mask=m_mask[:, None] & (k < K)[None, :], other=0.0)
    return tl.dot(w.to(x.dtype), tl.trans(x), acc)


@triton.jit
def swap_ab_store(acc, b_ptr, y_ptr, offs_n, offs_m, n_mask, m_mask, stride_ym, HAS_BIAS: tl.constexpr):
    """y[offs_m, offs_n] = acc^T (+ bias[offs_n]), cast to y's dtype."""
    if HAS_BIAS:
        acc += tl.load(b_ptr + offs_n, mask=n_mask, other=0.0).to(tl.float32)[:, None]
    y_ptrs = y_ptr + offs_m[None, :] * stride_ym + offs_n[:, None]
    tl.store(y_ptrs, acc.to(y_ptr.dtype.element_ty), mask=n_mask[:, None] & m_mask[None, :])


@triton.jit
def tile_zeros(BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, SWAP: tl.constexpr):
    """The fp32 accumulator of an oriented tile: [BLOCK_N, BLOCK_M] when SWAP (W . X^T), else [BLOCK_M, BLOCK_N]."""
    if SWAP:  # one return: the compiler checks every return's type, even under a constexpr branch
        acc = tl.zeros([BLOCK_N, BLOCK_M], dtype=tl.float32)
    else:
        acc = tl.zeros([BLOCK_M, BLOCK_N], dtype=tl.float32)
    return acc


@triton.jit
def x_step(x_ptr, offs_m, m_mask, k0, K, stride_xm, BLOCK_K: tl.constexpr):
    """x[offs_m, k0:k0 + BLOCK_K] (zeros past M and K)."""
    k = k0 + tl.arange(0, BLOCK_K)
    return tl.load(x_ptr + offs_m[:, None] * stride_xm + k[None, :], mask=m_mask[:, None] & (k < K)[None, :],
                   other=0.0)


@triton.jit
def oriented_dot(w, x, acc, SWAP: tl.constexpr):
    """w [BLOCK_N, BLOCK_K] against x [BLOCK_M, BLOCK_K]: acc + W . X^T when SWAP, else acc + X . W^T (acc None:
    the product alone)."""
    if SWAP:
        out = tl.dot(w, tl.trans(x), acc)
    else:
        out = tl.dot(x, tl.trans(w), acc)
    return out


@triton.jit
def by_row(v, SWAP: tl.constexpr):
    """A per-weight-row vector [BLOCK_N] broadcast over an oriented tile."""
    if SWAP:
        out = v[:, None]
    else:
        out = v[None, :]
    return out


@triton.jit
def by_col(v, SWAP: tl.constexpr):
    """A per-x-row vector [BLOCK_M] broadcast over an oriented tile."""
    if SWAP:
        out = v[None, :]
    else:
        out = v[:, None]
    return out


@triton.jit
def tile_store(acc, b_ptr, y_ptr, offs_n, offs_m, n_mask, m_mask, stride_ym, HAS_BIAS: tl.constexpr,
               ATOMIC: tl.constexpr, SWAP: tl.constexpr):
    """y[offs_m, offs_n] = the oriented tile (+ bias[offs_n]), cast to y's dtype; ATOMIC: added into a zeroed fp32
    buffer instead (a K split's share; the launcher adds the bias after the last)."""
    y_ptrs = y_ptr + by_col(offs_m, SWAP) * stride_ym + by_row(offs_n, SWAP)
    mask = by_row(n_mask, SWAP) & by_col(m_mask, SWAP)
    if ATOMIC:
        tl.atomic_add(y_ptrs, acc, mask=mask, sem="relaxed")
    else:
        if HAS_BIAS:
            acc += by_row(tl.load(b_ptr + offs_n, mask=n_mask, other=0.0).to(tl.float32), SWAP)
        tl.store(y_ptrs, acc.to(y_ptr.dtype.element_ty), mask=mask)


def split_k_plan(kernel, x2, operands: tuple, bias, N: int, KW: int, NG: int, G: int, config: dict,
                 stride_ym: int, **meta):
    """A split-K tile kernel `kernel(x, *operands, b, y, M, N, K, KW, NG, G, K_SPLIT, stride_xm, stride_ym, HAS_BIAS,
    ATOMIC, SWAP, SCALE_AFTER, ..., BLOCK_M, BLOCK_N, BLOCK_K)` (int4/tc.py, ternary/tc.py) on x2 [M, K] for
    arguments with this metadata, decided and bound once: `call(x2, operands, bias, y)` with y [M, N] of row stride
    `stride_ym`. Each K step stays inside one weight group (BLOCK_K divides G);
    SPLIT_K > 1 (small M: N / BLOCK_N tiles alone leave SMs idle) adds fp32 partial sums into a zeroed buffer with
    atomics, then one add of the bias (or a copy) casts them into y. x2 may be handed over as any tensor with its
    address and row stride (e.g. the [..., K] x that x2 views)."""
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
    bound = bind(kernel, grid, [TENSOR] * (len(operands) + 3) + [M, N, K, KW, NG, G, k_split, x2.stride(0),
                                                                   N if split > 1 else stride_ym],
                 dict(HAS_BIAS=bias is not None, ATOMIC=split > 1, **cfg, **meta))
    if split == 1:
        def call(x2, operands, bias, y):
            bound(x2, *operands, bias if bias is not None else operands[-1], y)
            return y
        return call

    def call_split(x2, operands, bias, y):
        out = torch.zeros(M, N, dtype=torch.float32, device=y.device)
        bound(x2, *operands, bias if bias is not None else operands[-1], out)
        split_k_finish(out, bias, y if y.dim() == 2 else y.view(M, N))
        return y
    return call_split


def split_k_finish(sums, bias, y) -> None:
    """The split-K epilogue of every tile kernel: the fp32 sums [M, N] (+ the bias) cast into y [M, N], one kernel."""
    if bias is not None:
        torch.add(sums, bias, out=y)
    else:
        y.copy_(sums)


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


def rows_plan(x):
    """(x2, as_rows) for a per-signature plan: x2 = rows(x), and `as_rows(x)` for a later x of the same signature,
    what a kernel bound on x2 (its row stride) may read: x itself where rows(x) is a view of it (no call per
    launch), else rows(x)."""
    x2 = rows(x)
    return x2, (_itself if x2.data_ptr() == x.data_ptr() else rows)


def _itself(x):
    return x


def tc_gsub(G: int, K: int, block_k: int) -> int:
    """Sub-group width of a swap-AB tensor-core tile: min(group, BLOCK_K); the tile must hold whole groups."""
    gsub = block_k if G >= K else min(G, block_k)
    assert block_k % gsub == 0 and (G <= block_k or G % block_k == 0 or G >= K), (G, block_k)
    return gsub


def tc_grid(N: int, M: int, cfg: dict):
    """Grid of the swap-AB kernels: axis 0 over N-tiles, axis 1 over M-tiles."""
    return (cdiv(N, cfg["BLOCK_N"]), cdiv(M, cfg["BLOCK_M"]))


LAUNCH_OPTIONS = ("num_warps", "num_stages")


def split_launch(cfg: dict):
    """(constexprs, launch options) of a config dict such as TC_CONFIGS' entries."""
    return ({k: v for k, v in cfg.items() if k not in LAUNCH_OPTIONS},
            {k: v for k, v in cfg.items() if k in LAUNCH_OPTIONS})
