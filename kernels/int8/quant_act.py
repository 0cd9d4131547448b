"""The fused activation quantizer of the int GEMMs: float x -> int8 (per-row dynamic or static step) in one pass
over K for the max and one for the rounding; rounding is half-to-even via the 1.5 * 2**23 trick.

Static QSM sites also add a per-column zero point (asymmetric steps, shifted into the signed range) and read their
columns through the site's gather (sort by step, split copies, zero pad): x[gather[k]] is loaded where the GEMM
wants column k, so the reordering costs no pass of its own.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from ..tiling import cdiv, next_pow2
from ..checks import check_quantize
from ..launch import TENSOR, bind


@triton.jit
def _load_columns(x_row, g_ptr, k, K, C, GATHER: tl.constexpr):
    """x_row[k] (or x_row[gather[k]], 0 where gather[k] >= C) as fp32, for the K output columns k."""
    if GATHER:
        src = tl.load(g_ptr + k, mask=k < K, other=C)
        return tl.load(x_row + src, mask=(k < K) & (src < C), other=0.0).to(tl.float32)
    return tl.load(x_row + k, mask=k < K, other=0.0).to(tl.float32)


@triton.jit
def _quant_act(x_ptr, s_ptr, z_ptr, g_ptr, q_ptr, so_ptr, K, C, stride_xm, stride_qm, stride_s, qmax, qinv,
               STATIC: tl.constexpr, HAS_ZERO: tl.constexpr, GATHER: tl.constexpr, BLOCK_K: tl.constexpr):
    m = tl.program_id(0)
    offs = tl.arange(0, BLOCK_K)
    x_row = x_ptr + m * stride_xm
    if STATIC:
        s = tl.load(s_ptr + m * stride_s).to(tl.float32)
    else:
        amax = tl.zeros([BLOCK_K], dtype=tl.float32)
        for k0 in range(0, K, BLOCK_K):
            k = k0 + offs
            xv = _load_columns(x_row, g_ptr, k, K, C, GATHER)
            amax = tl.maximum(amax, tl.abs(xv))
        s = tl.max(amax, axis=0) * qinv
        s = tl.where(s > 0, s, 1.0)
    inv = tl.math.div_rn(1.0, s)  # IEEE reciprocal, identical to torch's 1.0 / s
    for k0 in range(0, K, BLOCK_K):
        k = k0 + offs
        xv = _load_columns(x_row, g_ptr, k, K, C, GATHER)
        r = (xv * inv + 12582912.0) - 12582912.0  # round half to even for |v| < 2**22
        if HAS_ZERO:
            r += tl.load(z_ptr + k, mask=k < K, other=0.0).to(tl.float32)
        r = tl.minimum(tl.maximum(r, -qmax - 1.0), qmax * 1.0)
        tl.store(q_ptr + m * stride_qm + k, r.to(tl.int8), mask=k < K)
    tl.store(so_ptr + m, s)


@triton.jit
def _quant_static(x_ptr, s_ptr, z_ptr, g_ptr, q_ptr, so_ptr, M, K, C, stride_xm, stride_qm, stride_s, qmax,
                  HAS_ZERO: tl.constexpr, GATHER: tl.constexpr, BLOCK_R: tl.constexpr, BLOCK_K: tl.constexpr):
    """Static steps: a [BLOCK_R, BLOCK_K] tile per program, so the zero points and gather indices of a column
    block are read once for BLOCK_R rows (per row they would be read again by every row: K x 4 bytes each).
    The column blocks of one row tile are the fastest in the (flat) grid, so with a gather (rows wider than
    ROW_GATHER_MAX_C; narrower ones take `_quant_static_row_gather`) the programs sharing a row tile run together
    and find its sectors in L2 (with row tiles fastest: 1.47 ms at 4096 x 14336 on an H100, 0.46 ms so)."""
    pid = tl.program_id(0)
    kblocks = tl.cdiv(K, BLOCK_K)
    rows = (pid // kblocks) * BLOCK_R + tl.arange(0, BLOCK_R)
    k = (pid % kblocks) * BLOCK_K + tl.arange(0, BLOCK_K)
    rmask = rows < M
    kmask = k < K
    if GATHER:
        src = tl.load(g_ptr + k, mask=kmask, other=C)
    else:
        src = k
    x = tl.load(x_ptr + rows[:, None] * stride_xm + src[None, :], mask=rmask[:, None] & (kmask & (src < C))[None, :],
                other=0.0).to(tl.float32)
    s = tl.load(s_ptr + rows * stride_s, mask=rmask, other=1.0).to(tl.float32)
    if pid % kblocks == 0:  # each row's step, stored once
        tl.store(so_ptr + rows, s, mask=rmask)
    inv = tl.math.div_rn(tl.full([BLOCK_R], 1.0, tl.float32), s)
    r = (x * inv[:, None] + 12582912.0) - 12582912.0  # round half to even for |v| < 2**22
    if HAS_ZERO:
        r += tl.load(z_ptr + k, mask=kmask, other=0.0).to(tl.float32)[None, :]
    r = tl.minimum(tl.maximum(r, -qmax - 1.0), qmax * 1.0)
    tl.store(q_ptr + rows[:, None] * stride_qm + k[None, :], r.to(tl.int8), mask=rmask[:, None] & kmask[None, :])


@triton.jit
def _quant_static_row_gather(x_ptr, s_ptr, z_ptr, g_ptr, q_ptr, so_ptr, M, K, C, stride_xm, stride_qm, stride_s,
                             qmax, HAS_ZERO: tl.constexpr, CP: tl.constexpr, BLOCK_K: tl.constexpr):
    """Static steps with a gather, one row per program: the row is read once, coalesced ([CP] >= C), and the K
    output columns are gathered from it on chip (`tl.gather`), where gathering from global memory reads a 32-byte
    sector per value (the tile kernel above: 0.38 TB/s at 4096 x 14336 on an H100). The row stays in x's dtype
    until gathered (bf16: 111 us at 4096 x 14336 on an H100, 322 us as fp32; a copy of x takes 82 us —
    .gpu/quant_gather_dtype_probe.py)."""
    m = tl.program_id(0)
    c = tl.arange(0, CP)
    x = tl.load(x_ptr + m * stride_xm + c, mask=c < C, other=0.0)  # kept in x's dtype: half the bytes of fp32
    s = tl.load(s_ptr + m * stride_s).to(tl.float32)
    tl.store(so_ptr + m, s)
    inv = tl.math.div_rn(1.0, s)
    for k0 in range(0, K, BLOCK_K):
        k = k0 + tl.arange(0, BLOCK_K)
        src = tl.load(g_ptr + k, mask=k < K, other=C)
        v = tl.where(src < C, tl.gather(x, tl.minimum(src, CP - 1), 0).to(tl.float32), 0.0)
        r = (v * inv + 12582912.0) - 12582912.0  # round half to even for |v| < 2**22
        if HAS_ZERO:
            r += tl.load(z_ptr + k, mask=k < K, other=0.0).to(tl.float32)
        r = tl.minimum(tl.maximum(r, -qmax - 1.0), qmax * 1.0)
        tl.store(q_ptr + m * stride_qm + k, r.to(tl.int8), mask=k < K)


STATIC_CONFIG = dict(BLOCK_R=16, BLOCK_K=256, num_warps=4)
SMALL_M_BLOCK_K = 128  # fewer rows than a row tile: narrower column blocks, so a decode row still spans the GPU
ROW_GATHER_CONFIG = dict(BLOCK_K=2048, num_warps=8)
ROW_GATHER_MAX_C = 32768  # wider rows take the tile kernel (the row must fit on chip)


def _row_gather_min_m(c: int) -> int:
    """Rows from which one program per row beats the tile kernel (H100, .gpu/quant_small_m_probe.py: at 4096
    columns 3.1 vs 4.3 us from 16 rows; at 14336 the row's serial gather costs 13 us, so only from 128 rows)."""
    return 16 if c <= 8192 else 128


def quantize_activation_int8_triton(x, scale, qmax: int, zero=None, gather=None, block_k: int | None = None,
                                    clip: float = 1.0):
    check_quantize(x, scale, qmax, zero, gather, clip, op="quantize_activation_int8_triton")
    return run_quantize(x, scale, qmax, zero, gather, block_k, clip)


def run_quantize(x, scale, qmax: int, zero=None, gather=None, block_k: int | None = None, clip: float = 1.0):
    """`quantize_activation_int8_triton` on checked arguments (the op checks once per signature). A static
    `scale` holds one step or one per row; the kernels read it in place (stride 0 or 1) and write each row's
    step to the returned steps themselves, so no copy of it is launched."""
    C = x.shape[-1]
    K = gather.shape[0] if gather is not None else C
    x2 = x.reshape(-1, C)
    if x2.stride(-1) != 1:
        x2 = x2.contiguous()
    M = x2.shape[0]
    q = torch.empty(M, K, dtype=torch.int8, device=x.device)
    s_out = torch.empty(M, dtype=torch.float32, device=x.device)
    s_in = s_out if scale is None else scale.reshape(-1).float()  # .float(): no copy when already fp32
    if M:
        quantize_bind(x2, scale, qmax, zero, gather, block_k, clip)(*quantize_tensors(x2, s_in, zero, gather, q, s_out))
    return q.reshape(*x.shape[:-1], K), s_out


def quantize_bind(x2, scale, qmax: int, zero, gather, block_k, clip: float):
    """The launch of the quantizer kernel for arguments with this metadata (x2 [M, C] unit stride, M > 0; `scale`
    None = dynamic, else its number of steps sets the stride), bound once: call it with `quantize_tensors(...)`."""
    M, C = x2.shape
    K = gather.shape[0] if gather is not None else C
    stride_s = 1 if scale is not None and scale.numel() > 1 else 0
    ints = [M, K, C, x2.stride(0), K, stride_s, qmax]  # K: the codes' row stride (a fresh [M, K] tensor)
    if scale is not None and block_k is None and gather is not None and C <= ROW_GATHER_MAX_C \
            and M >= _row_gather_min_m(C):
        return bind(_quant_static_row_gather, (M,), [TENSOR] * 6 + ints,
                    dict(HAS_ZERO=zero is not None, CP=next_pow2(C), **ROW_GATHER_CONFIG))
    if scale is not None and block_k is None:
        cfg = STATIC_CONFIG if M >= STATIC_CONFIG["BLOCK_R"] else \
            dict(STATIC_CONFIG, BLOCK_R=next_pow2(M), BLOCK_K=SMALL_M_BLOCK_K)
        grid = (cdiv(K, cfg["BLOCK_K"]) * cdiv(M, cfg["BLOCK_R"]),)
        return bind(_quant_static, grid, [TENSOR] * 6 + ints,
                    dict(HAS_ZERO=zero is not None, GATHER=gather is not None, **cfg))
    bk = block_k or min(4096, next_pow2(K))
    return bind(_quant_act, (M,), [TENSOR] * 6 + ints[1:] + [clip / qmax],
                dict(STATIC=scale is not None, HAS_ZERO=zero is not None, GATHER=gather is not None, BLOCK_K=bk,
                     num_warps=4))


def quantize_tensors(x2, s_in, zero, gather, q, s_out):
    """The tensor arguments of `quantize_bind`'s launch: x, the steps read (s_out when dynamic), zero points, gather,
    codes, steps written (an absent one's slot gets s_in: never read)."""
    return (x2, s_in, zero if zero is not None else s_in, gather if gather is not None else s_in, q, s_out)


def plan(x, scale, qmax: int, zero=None, gather=None, clip: float = 1.0):
    """The shipped call for checked arguments of this signature, in the op's argument order (kernels/checks.py
    `planned`): the kernel's launch bound once when x is contiguous and a static step fp32 (both read in place),
    every other case through `run_quantize`."""
    C = x.shape[-1]
    M = x.numel() // C if C else 0
    if not (M and x.is_contiguous() and (scale is None or scale.dtype == torch.float32 and scale.is_contiguous())):
        return lambda x, scale, qmax, zero, gather, clip: run_quantize(x, scale, qmax, zero, gather, None, clip)
    bound = quantize_bind(x.view(M, C), scale, qmax, zero, gather, None, clip)
    q_shape, device = (*x.shape[:-1], gather.shape[0] if gather is not None else C), x.device

    def call(x, scale, qmax, zero, gather, clip):
        q = torch.empty(q_shape, dtype=torch.int8, device=device)
        s_out = torch.empty(M, dtype=torch.float32, device=device)
        bound(*quantize_tensors(x, s_out if scale is None else scale, zero, gather, q, s_out))
        return q, s_out
    return call
