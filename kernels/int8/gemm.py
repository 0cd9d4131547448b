"""int8 x int8 -> int32 tensor-core GEMM with a scaled fp32 epilogue; also the W4A8 GEMM (W_INT4).

Y[m, n] = (sum_k X[m, k] * W[n, k]) * w_scale[n] (* x_scale[m]) (+ bias[n]), W row-major [N, K] so both
operands are K-major, the layout int8 wgmma requires.  With per-group weight scales (GROUP > 0, w_scale
[N, ceil(K / GROUP)]) each K tile lies inside one group (BLOCK_K divides GROUP), its exact int32 partial product is
scaled by the group's step and summed in fp32: Y[m, n] = sum_g w_scale[n, g] * (sum_{k in g} X[m, k] * W[n, k]).
The MMA accumulates each tile onto the bits of MAGIC = 1.5 * 2**23, so the float value of the int32 sum is one
subtraction (exact while |sum| < 2**22) instead of an int-to-float conversion at a quarter of the FMA rate.  That
per-tile epilogue still keeps the MMAs from pipelining; the prefill sizes of static QSM weights therefore take
integer group steps instead (int8/w4a8.py "unpack": one int8 GEMM over all of K with a step per row).
Asymmetric activation codes (x_zero [K], a zero point per column) enter as (X - z) W^T = X W^T - (z W^T): the
second term per tile in int32 (per-row steps) or per group in fp32, subtracted at the end; the lowering folds a
static zero's share into the bias instead, so the GEMMs it emits take no x_zero.  Asymmetric weights (w_zero, one
zero point per row or per (row, group), HAS_WZ) enter as (X - zx)(W - wz)^T = (X - zx) W^T - wz * sum_k (X - zx),
the row sum of the activation codes over each K tile times the weight's zero, in int32 before the group's step;
int4 weights with per-group steps subtract the zero from the unpacked tile instead (TILE_WZ: 1/BLOCK_M of the
work).  With W_INT4 the weight is the packed int4 format (formats.pack_int4), loaded as int32 words and unpacked to
int8 in registers: two's complement nibbles sign-extended (shl + sar) for symmetric weights, plain nibbles [0, 15]
(shr + and) with zero points — the format's rule, as for W4A16 (UNPACK 0: int4/unpack.py's interleaved planes of
[BLOCK_N, BLOCK_K / 8] words, 1: the word of every (n, k) re-read from L1).
"""
from __future__ import annotations

import math

import torch
import triton
import triton.language as tl

from ..checks import check_int_linear
from ..tiling import cdiv, grouped_tile, pick, rows_plan, split_k_finish
from ..launch import TENSOR, bind
from ..runtime import cuda_sms
from .persistent import aligned, persistent_fits, persistent_plan
from ..int4.unpack import nibbles


MAGIC = tl.constexpr(0x4B400000)  # the bits of 1.5 * 2**23: an int32 s added to them is the float MAGIC_F + s
MAGIC_F = tl.constexpr(12582912.0)


@triton.jit
def _int8_mm(x_ptr, w_ptr, ws_ptr, xs_ptr, xz_ptr, wz_ptr, b_ptr, y_ptr, M, N, K, K_SPLIT, stride_xm, stride_wn, stride_ym,
             NG, GROUP: tl.constexpr, HAS_XZ: tl.constexpr, HAS_WZ: tl.constexpr, W_INT4: tl.constexpr,
             HAS_XS: tl.constexpr, HAS_BIAS: tl.constexpr, UNPACK: tl.constexpr, ATOMIC: tl.constexpr,
             BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, GROUP_M: tl.constexpr,
             LOOP_STAGES: tl.constexpr):
    if W_INT4:
        w_ptr = w_ptr.to(tl.pointer_type(tl.int32), bitcast=True)  # the packed bytes, read as int32 words
    pid_m, pid_n = grouped_tile(tl.program_id(0), M, N, BLOCK_M, BLOCK_N, GROUP_M)
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    m_mask = offs_m < M
    n_mask = offs_n < N
    offs_k = tl.arange(0, BLOCK_K)
    acc = tl.zeros([BLOCK_M, BLOCK_N], dtype=tl.int32)
    accf = tl.zeros([BLOCK_M, BLOCK_N], dtype=tl.float32)
    zacc = tl.zeros([BLOCK_N], dtype=tl.int32)
    racc = tl.zeros([BLOCK_M], dtype=tl.int32)
    zacc_f = tl.zeros([BLOCK_N], dtype=tl.float32)
    TILE_WZ: tl.constexpr = GROUP > 0 and HAS_WZ and W_INT4  # (w - z) formed on the weight tile
    ROW_WZ: tl.constexpr = HAS_WZ and not TILE_WZ  # the zero's share from the activations' row sums
    k_lo = tl.program_id(1) * K_SPLIT  # split-K: this program's share of K (all of it without a split)
    for k0 in tl.range(k_lo, min(k_lo + K_SPLIT, K), BLOCK_K, num_stages=LOOP_STAGES):
        k = k0 + offs_k
        x = tl.load(x_ptr + offs_m[:, None] * stride_xm + k[None, :],
                    mask=m_mask[:, None] & (k < K)[None, :], other=0)
        if W_INT4 and UNPACK == 0:
            BKW: tl.constexpr = BLOCK_K // 8
            wi = k0 // 8 + tl.arange(0, BKW)
            words = tl.load(w_ptr + offs_n[:, None] * stride_wn + wi[None, :],
                            mask=n_mask[:, None] & (wi < stride_wn)[None, :], other=0)
            w = nibbles(words, HAS_WZ).to(tl.int8)  # plain nibbles [0, 15] with zero points, else signed
        elif W_INT4:
            # the word of every (n, k), re-read 8x from L1; nibble k % 8 extracted in place: no 3-D reshape
            wv = tl.load(w_ptr + offs_n[:, None] * stride_wn + (k // 8)[None, :],
                         mask=n_mask[:, None] & (k < K)[None, :], other=0)
            if HAS_WZ:
                w = ((wv >> ((k % 8) * 4)[None, :]) & 15).to(tl.int8)
            else:
                w = ((wv << (28 - (k % 8) * 4)[None, :]) >> 28).to(tl.int8)
        else:
            w = tl.load(w_ptr + offs_n[:, None] * stride_wn + k[None, :],
                        mask=n_mask[:, None] & (k < K)[None, :], other=0)
        if TILE_WZ:  # nibble minus zero in [-15, 15]: on the tile, 1/BLOCK_M of the accumulator's work
            gz = tl.load(wz_ptr + offs_n * NG + k0 // GROUP, mask=n_mask, other=0.0).to(tl.int8)
            w = w - gz[:, None]
        if HAS_XZ:  # sum_k z_k W[n, k] over this tile, exact in int32 (CUDA cores: 1/BLOCK_M of the MMA's work)
            xz = tl.load(xz_ptr + k, mask=k < K, other=0.0).to(tl.int32)
            zsum = tl.sum(w.to(tl.int32) * xz[None, :], axis=1)
        if ROW_WZ:  # sum_k (X[m, k] - zx_k) over this tile: what the weight's zero multiplies, exact in int32
            rsum = tl.sum(x.to(tl.int32), axis=1)
            if HAS_XZ:
                rsum = rsum - tl.sum(xz, axis=0)
        if GROUP > 0:  # this tile's exact int32 product, scaled by its group's step
            # the MMA accumulates onto MAGIC's bits, so the fp32 value of the int32 sum is one float subtraction
            # (exact: |sum| < 2**22) instead of an int-to-float conversion, which runs at 1/4 of the FMA rate
            part = tl.dot(x, tl.trans(w), tl.full([BLOCK_M, BLOCK_N], MAGIC, tl.int32), out_dtype=tl.int32)
            if ROW_WZ:  # int8 weights minus zero may not fit int8: on the int32 sum
                gz = tl.load(wz_ptr + offs_n * NG + k0 // GROUP, mask=n_mask, other=0.0).to(tl.int32)
                part = part - rsum[:, None] * gz[None, :]
            gs = tl.load(ws_ptr + offs_n * NG + k0 // GROUP, mask=n_mask, other=0.0).to(tl.float32)
            accf += (part.to(tl.float32, bitcast=True) - MAGIC_F) * gs[None, :]
            if HAS_XZ:  # the activation zeros' share, per column: summed apart, subtracted once at the end
                zacc_f += zsum.to(tl.float32) * gs
        else:
            acc = tl.dot(x, tl.trans(w), acc, out_dtype=tl.int32)
            if HAS_XZ:
                zacc += zsum
            if ROW_WZ:
                racc += rsum
    if GROUP > 0:
        y = accf - zacc_f[None, :] if HAS_XZ else accf
    else:
        if HAS_XZ:
            acc = acc - zacc[None, :]
        if ROW_WZ:
            acc = acc - racc[:, None] * tl.load(wz_ptr + offs_n, mask=n_mask, other=0.0).to(tl.int32)[None, :]
        y = acc.to(tl.float32) * tl.load(ws_ptr + offs_n, mask=n_mask, other=0.0).to(tl.float32)[None, :]
    if HAS_XS:
        y = y * tl.load(xs_ptr + offs_m, mask=m_mask, other=0.0).to(tl.float32)[:, None]
    y_ptrs = y_ptr + offs_m[:, None] * stride_ym + offs_n[None, :]
    if ATOMIC:  # a K split's share into the zeroed fp32 buffer; the launcher adds the bias after the last
        tl.atomic_add(y_ptrs, y, mask=m_mask[:, None] & n_mask[None, :], sem="relaxed")
    else:
        if HAS_BIAS:
            y += tl.load(b_ptr + offs_n, mask=n_mask, other=0.0).to(tl.float32)[None, :]
        tl.store(y_ptrs, y.to(y_ptr.dtype.element_ty), mask=m_mask[:, None] & n_mask[None, :])


# M-bucket -> config (one per launch).  Large tiles need >= 64 rows for wgmma. Int8 weights (per-row steps): up to
# 16 rows the N tile narrows until the tiles cover the SMs (`decode_block_n`); 64 x 128 tiles up to 256 rows, 128 x
# 128 above (H100, .gpu/int8_prompt_tile_probe.py, Llama-3-8B's four GEMMs at 128 / 512 / 2,048 rows: 243.4 ->
# 130.3, 310.8 -> 229.4, 838.6 -> 752.3 us against the 256 x 128 tile; bf16 170.4 / 298.9 / 1,141.7), and from
# persistent.PERSISTENT_MIN_M rows the persistent TMA kernel (int8/persistent.py) where its operands allow.
INT8_CONFIGS = [
    (16, dict(BLOCK_M=16, BLOCK_N=128, BLOCK_K=256, GROUP_M=8, num_warps=4, num_stages=4)),
    (256, dict(BLOCK_M=64, BLOCK_N=128, BLOCK_K=128, GROUP_M=8, num_warps=4, num_stages=4)),
    (1 << 62, dict(BLOCK_M=128, BLOCK_N=128, BLOCK_K=128, GROUP_M=8, num_warps=8, num_stages=3)),
]
W4A8_CONFIGS = [
    (16, dict(BLOCK_M=16, BLOCK_N=128, BLOCK_K=256, GROUP_M=8, num_warps=4, num_stages=4)),
    (64, dict(BLOCK_M=64, BLOCK_N=128, BLOCK_K=128, GROUP_M=8, num_warps=4, num_stages=4)),
    (1 << 62, dict(BLOCK_M=256, BLOCK_N=128, BLOCK_K=128, GROUP_M=8, num_warps=8, num_stages=3)),
]


# LOOP_STAGES (a config key: the K loop is `tl.range(..., num_stages=LOOP_STAGES)`; None = the launch's pipelining):
# the launch's `num_stages` pipelines only the loads that feed `tl.dot`, so the grouped configs' K loop waited a full
# memory round trip for each step's group steps and zero points (sm_90 SASS of the 16 x 32 config: 7 synchronous
# LDGs in the loop, 10 in the long-K split); with LOOP_STAGES the loop-level pipeliner prefetches them as well (no
# synchronous LDG left). Timed on an H100 (.gpu/w4a8_tc_probe.py, asymmetric g64 + bias, 4-16 rows): at K = 4096
# 16.9-17.2 vs 18.2-18.4 us (4096 x 4096) and 23.7 vs 25.3-25.6 (6144 x 4096), even at 28672 x 4096; the long-K
# split is slower with it (43.9-45.0 vs 41.3-41.9 at 4096 x 14336), so it keeps the launch's pipelining.
# Per-group steps (QSM, grouped W4A8): the scale epilogue of every 64-wide K tile keeps the MMAs from pipelining,
# so only small M runs this kernel (thin N tiles: more CTAs); from DEQUANT_MIN_M rows on (int8/w4a8.py) the weight
# is dequantized once and cuBLAS runs the product (H200, benchmarks/gemm.py --sweep-grouped: the best grouped tile
# at M = 4096 took 1.2-1.7 ms at 4096x14336 where bf16 takes 0.6 ms).
# Up to 32 rows (batched decode): 16 x 32 tiles, 6 stages (H100, .gpu/w4a8_grouped_cfg_probe.py, summed over
# Llama-3-8B's three GEMM shapes: 8 rows 113 -> 103 us, 32 rows 245 -> 133 us against the 64 x 128 tile).
GROUPED_CONFIGS = [
    (32, dict(BLOCK_M=16, BLOCK_N=32, BLOCK_K=64, GROUP_M=8, num_warps=4, num_stages=6, LOOP_STAGES=6)),
    (1 << 62, dict(BLOCK_M=64, BLOCK_N=128, BLOCK_K=64, GROUP_M=8, num_warps=4, num_stages=4, LOOP_STAGES=4)),
]
# Long K at those row counts (down_proj, K = 14336): 64-wide tiles, K split 8 ways (H100, .gpu/w4a8_split_k_probe.py,
# asymmetric g64 weights: 4096 x 14336 at 4-16 rows 65 -> 42 us, bf16 53; 32 rows 83 -> 70). At K = 4096 no split
# pays (the zeroed buffer and the cast cost what the split saves: 4096 x 4096 18.5 -> 19.3-21 us).
GROUPED_LONG_K = 8192
GROUPED_LONG_K_CONFIG = dict(BLOCK_M=16, BLOCK_N=64, BLOCK_K=64, GROUP_M=8, SPLIT_K=8, num_warps=4, num_stages=6)
DEQUANT_MIN_M = 64


def decode_block_n(N: int, device) -> int:
    """The int8 tile's N width at <= 16 rows (a weight read): the widest of 128 / 64 whose tiles cover the SMs, else
    32 (H100, .gpu/int8_small_m_probe.py, 1-16 rows, one weight per shape, so partly served from L2: 4096 x 4096
    10.2 -> 6.3-6.7 us, 4096 x 14336 29.6-29.8 -> 24.8-25.7, 6144 x 4096 10.3-10.4 -> 8.3-8.7; 28672 x 4096 keeps
    128: 42.6-43.4. With the weights rotated through HBM, benchmarks/gemm.py, one row: 9.5 / 26.7 / 12.2 us, bf16
    17.1 / 46.2 / 22.1)."""
    sms = cuda_sms(device)
    return next((bn for bn in (128, 64) if cdiv(N, bn) >= sms), 32)


def int_group_ok(K: int, group_size: int) -> bool:
    """The weight groups `_int8_mm` takes: one per row (<= 0 or >= K), or a multiple of 32 (the int8 MMA's K)."""
    return group_size <= 0 or group_size >= K or group_size % 32 == 0


def int_mm(x, w, w_scale, x_scale, bias, out_dtype, w_int4: bool, config=None, group_size: int = 0, x_zero=None,
           w_zero=None):
    """The launcher of `_int8_mm`: x [..., K] int8, w int8 [N, K] or (w_int4) formats.pack_int4 [N, *];
    w_scale [N], or [N, ceil(K / group_size)] with group_size > 0; x_zero [K]: the codes' zero point per column
    (the product is (x - x_zero) W^T, the zero's share subtracted exactly in int32); w_zero (w_scale's shape,
    integer values): the weight codes' zero point per row or (row, group), the product uses W - w_zero (int4:
    the codes are plain nibbles [0, 15])."""
    return int_mm_plan(x, w, w_scale, x_scale, bias, out_dtype, w_int4, config, group_size, x_zero, w_zero)(
        x, w, w_scale, x_scale, bias, out_dtype, w_int4, config, group_size, x_zero, w_zero)


def int_mm_plan(x, w, w_scale, x_scale, bias, out_dtype, w_int4: bool, config=None, group_size: int = 0,
                x_zero=None, w_zero=None):
    """`int_mm` for arguments with this metadata, as a call taking the same arguments: the config, split and
    grid chosen and the launch bound once (an op's per-signature plan, kernels/checks.py `planned`)."""
    K = x.shape[-1]
    G = group_size if 0 < group_size < K else 0
    x2, as_rows = rows_plan(x)
    M, N = x2.shape[0], w.shape[0]
    if config is None and G and K >= GROUPED_LONG_K and M <= GROUPED_CONFIGS[0][0]:
        config = GROUPED_LONG_K_CONFIG
    cfg = dict(config or pick(GROUPED_CONFIGS if G else W4A8_CONFIGS if w_int4 else INT8_CONFIGS, M))
    cfg.setdefault("LOOP_STAGES", None)
    if config is None and not G and not w_int4 and M <= INT8_CONFIGS[0][0] and x.device.type == "cuda":
        cfg["BLOCK_N"] = decode_block_n(N, x.device)
    persistent = None
    if config is None and persistent_fits(x2, w, M, bool(G), w_int4, x_zero, w_zero):
        persistent = persistent_plan(M, N, K, x2.stride(0), w.stride(0), x.device, x_scale is not None,
                                     bias is not None)
    split = cfg.pop("SPLIT_K", 1)
    if G:
        assert int_group_ok(K, G), G
        cfg["BLOCK_K"] = math.gcd(cfg["BLOCK_K"], G)  # a tile never straddles two groups
        if not w_int4:  # a tile's sum of (x - zx)(w - wz) over int8 codes stays below MAGIC's 2**22 range
            cfg["BLOCK_K"] = min(cfg["BLOCK_K"], 64)
    k_split = cdiv(cdiv(K, split), cfg["BLOCK_K"]) * cfg["BLOCK_K"]  # whole tiles: each inside one group
    split = cdiv(K, k_split) if K else 1
    grid = (cdiv(M, cfg["BLOCK_M"]) * cdiv(N, cfg["BLOCK_N"]), split)
    w_stride = w.stride(0) // 4 if w_int4 else w.stride(0)  # int4: the int32 words' row stride
    bound = bind(_int8_mm, grid, [TENSOR] * 8 + [M, N, K, max(k_split, 1), x2.stride(0), w_stride, N,
                                                 w_scale.shape[-1] if G else 1],
                 dict(GROUP=G, HAS_XZ=x_zero is not None, HAS_WZ=w_zero is not None, W_INT4=w_int4,
                      HAS_XS=x_scale is not None, HAS_BIAS=bias is not None, ATOMIC=split > 1, **{"UNPACK": 0, **cfg}))
    out_shape, device = (*x.shape[:-1], N), x.device
    # The kernel reads x with the row stride bound above (`as_rows`) and every other tensor densely: what already has
    # that layout (this signature's shapes and strides decide) is handed over as it is, anything else copied per call
    strided = any(t is not None and not t.is_contiguous() for t in (w_scale, x_scale, x_zero, w_zero, bias))

    def call(x, w, w_scale, x_scale, bias, out_dtype, w_int4, config=None, group_size=0, x_zero=None, w_zero=None):
        # split-K (as tiling.split_k_plan): fp32 partial sums added into a zeroed buffer, then cast into the output
        # with the bias (tiling.split_k_finish)
        y = (torch.zeros(M, N, dtype=torch.float32, device=device) if split > 1 else
             torch.empty(out_shape, dtype=out_dtype, device=device))  # [M, N] in memory, no view per call
        if strided:  # rare: a strided step, zero point or bias
            w_scale, x_scale, x_zero, w_zero, bias = (t if t is None else t.contiguous()
                                                      for t in (w_scale, x_scale, x_zero, w_zero, bias))
        xr = as_rows(x)
        if persistent is not None and aligned(xr, w):  # TMA's 16-byte rule; an unaligned view takes the tile
            return persistent(xr, w, w_scale, x_scale, bias, y)
        bound(xr, w, w_scale, x_scale if x_scale is not None else w_scale,
              x_zero if x_zero is not None else w_scale, w_zero if w_zero is not None else w_scale,
              bias if bias is not None else w_scale, y)
        if split == 1:
            return y
        out = torch.empty(M, N, dtype=out_dtype, device=device)
        split_k_finish(y, bias, out)
        return out.view(out_shape)
    return call


def int8_linear_triton(x_int8, w_int8, w_scale, x_scale, bias, out_dtype, group_size: int = 0, x_zero=None,
                       config=None, w_zero=None):
    check_int_linear(x_int8, w_int8, w_scale, x_scale, bias, out_dtype, False, "int8_linear_triton", group_size,
                     x_zero, w_zero)
    return run_int8(x_int8, w_int8, w_scale, x_scale, bias, out_dtype, group_size, x_zero, config, w_zero)


def plan_int8(x_int8, w_int8, w_scale, x_scale, bias, out_dtype, group_size: int = 0, x_zero=None, w_zero=None):
    """The shipped call for checked arguments of this signature, in the op's argument order (kernels/checks.py
    `planned`): the tiled GEMM's launch bound once (`int_mm_plan`), the dequantize + cuBLAS path through
    `run_int8`."""
    K = x_int8.shape[-1]
    if x_int8.is_cuda and 0 < group_size < K and x_int8.numel() // K >= DEQUANT_MIN_M:
        return lambda x, w, ws, xs, b, dt, g, xz, wz: run_int8(x, w, ws, xs, b, dt, g, xz, None, wz)
    mm = int_mm_plan(x_int8, w_int8, w_scale, x_scale, bias, out_dtype, False, None, group_size, x_zero, w_zero)
    return lambda x, w, ws, xs, b, dt, g, xz, wz: mm(x, w, ws, xs, b, dt, False, None, g, xz, wz)


def run_int8(x_int8, w_int8, w_scale, x_scale, bias, out_dtype, group_size: int = 0, x_zero=None, config=None,
             w_zero=None):
    """`int8_linear_triton` on checked arguments (the op checks once per signature)."""
    K = x_int8.shape[-1]
    if (config is None and x_int8.is_cuda and 0 < group_size < K and K and
            x_int8.numel() // K >= DEQUANT_MIN_M):  # per-group steps at many rows: see GROUPED_CONFIGS
        from .dequant_mm import dequant_mm

        return dequant_mm(x_int8, w_int8, w_scale, x_scale, bias, out_dtype, group_size, x_zero, False, w_zero)
    return int_mm(x_int8, w_int8, w_scale, x_scale, bias, out_dtype, False, config, group_size, x_zero, w_zero)
