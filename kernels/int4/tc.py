"""W4A16 for 2 <= M < w4a16.DEQUANT_MIN_M: tensor-core GEMM with the int4 unpack in registers.

SWAP ("swap AB", the small-M form): acc[N-tile, M-tile] = W_deq . X^T, so the weight tile fills wgmma's >= 64-row
slot and is its register operand; else acc[M-tile, N-tile] = X . W_deq^T. Each K step lies inside one weight group
(BLOCK_K divides the group), so one scale (and zero) per weight row per step: on every weight value, or
(SCALE_AFTER) on the step's partial product, the dot then running on the exact integer values. SPLIT_K > 1 (small
M: N / BLOCK_N tiles alone leave SMs idle) adds fp32 partial sums into a zeroed buffer with atomics, then casts.
int8 x (W4A8 at a few rows, int8/w4a8.py "tc"): activation codes, exact in fp16 (as are the weight codes and every
product; the fp32 sum of one K step, at most 128 wide, stays below 2**24), SCALE_AFTER (the dot on the codes alone);
HAS_XS: each x row scaled by its step xs[m] before the store.
PLANES (SWAP, SCALE_AFTER, 128-wide steps; shipped at <= 16 rows where the group allows, `planes_fit`): the K step as
eight K = 16 dots on the nibble planes of the undecoded words (unpack.plane_dot), the weight wgmma's register
operand without the decoded tile's shared-memory round trip. Groups of 64 (HALF_GROUPS): the planes mix both halves
of a step, so the first half's dots run again on x zeroed past column 64 (the same weight planes: MMA work, which
a few rows leave idle) and each half takes its own step.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from ..runtime import interpreting
from ..tiling import by_col, by_row, oriented_dot, pick, split_k_plan, swap_ab_tile, tile_store, tile_zeros, x_step
from .unpack import nibble_floats, nibbles, plane_dot

# (max M, config), one config per launch (autotune with >= 2 configs breaks the interpreter); H200 sweep,
# benchmarks/w4a16_prompt_sweep.py (results: benchmarks/results/prompt_h200/). PLANES (where the group allows it,
# `planes_fit`) at <= 16 rows: H100, .gpu/w4a16_planes_probe.py, 16 rows bf16 g128: 4096x4096 13.1 -> 12.3 us,
# 4096x14336 30.5 -> 28.2; at 128 rows it loses (25.0 -> 34.6 at 4096x4096).
TC_CONFIGS = [
    (16, dict(BLOCK_M=16, BLOCK_N=64, BLOCK_K=128, SPLIT_K=8, SWAP=True, SCALE_AFTER=True, PLANES=True,
              num_warps=4, num_stages=3)),
    (32, dict(BLOCK_M=32, BLOCK_N=64, BLOCK_K=128, SPLIT_K=8, SWAP=True, SCALE_AFTER=True, num_warps=4,
              num_stages=3)),
    (64, dict(BLOCK_M=64, BLOCK_N=64, BLOCK_K=128, SPLIT_K=4, SWAP=True, SCALE_AFTER=True, num_warps=4,
              num_stages=3)),
    (1 << 62, dict(BLOCK_M=128, BLOCK_N=64, BLOCK_K=128, SPLIT_K=2, SWAP=False, SCALE_AFTER=False, num_warps=8,
                   num_stages=3)),
]


@triton.jit
def _w4a16_tc(x_ptr, w_ptr, s_ptr, z_ptr, xs_ptr, b_ptr, y_ptr, M, N, K, KW, NG, G, K_SPLIT, stride_xm,
              stride_ym, HAS_BIAS: tl.constexpr, ATOMIC: tl.constexpr, SWAP: tl.constexpr, SCALE_AFTER: tl.constexpr,
              HAS_ZERO: tl.constexpr, FLOAT_UNPACK: tl.constexpr, HAS_XS: tl.constexpr, PLANES: tl.constexpr,
              HALF_GROUPS: tl.constexpr,
              BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr):
    w_ptr = w_ptr.to(tl.pointer_type(tl.int32), bitcast=True)  # the packed bytes, read as int32 words
    offs_n, offs_m, n_mask, m_mask = swap_ab_tile(M, N, BLOCK_M, BLOCK_N)
    acc = tile_zeros(BLOCK_M, BLOCK_N, SWAP)
    k_lo = tl.program_id(2) * K_SPLIT
    for k0 in range(k_lo, min(k_lo + K_SPLIT, K), BLOCK_K):
        wi = k0 // 8 + tl.arange(0, BLOCK_K // 8)
        words = tl.load(w_ptr + offs_n[:, None] * KW + wi[None, :], mask=n_mask[:, None] & (wi < KW)[None, :],
                        other=0)
        g = k0 // G
        s = tl.load(s_ptr + offs_n * NG + g, mask=n_mask, other=0.0).to(tl.float32)
        x = x_step(x_ptr, offs_m, m_mask, k0, K, stride_xm, BLOCK_K)
        if x.dtype == tl.int8:  # W4A8 codes
            x = x.to(tl.float16)
        if PLANES:  # (SWAP, SCALE_AFTER, BLOCK_K = 128: `w4a16_tc` checks) eight K = 16 dots, no decoded tile
            part = plane_dot(words, x, HAS_ZERO)
            if HALF_GROUPS:  # 64-wide groups: the step's first half (group g) apart, `part` then its second half
                first = plane_dot(words, x, HAS_ZERO, True)
                part -= first
                half = (tl.arange(0, BLOCK_K) < 64)[None, :]
                if HAS_ZERO:
                    z = tl.load(z_ptr + offs_n * NG + g, mask=n_mask, other=0.0).to(tl.float32)
                    first -= by_row(z, SWAP) * by_col(tl.sum(tl.where(half, x.to(tl.float32), 0.0), axis=1), SWAP)
                    x = tl.where(half, 0.0, x)  # the second half's Σx, for its zero correction below
                acc += first * by_row(s, SWAP)
                g = (k0 + 64) // G
                s = tl.load(s_ptr + offs_n * NG + g, mask=n_mask & (offs_n * 0 + g < NG), other=0.0).to(tl.float32)
        else:
            if FLOAT_UNPACK:  # the exact codes straight in x's 16-bit float type
                q = nibble_floats(words, HAS_ZERO, x.dtype)
            else:
                q = nibbles(words, HAS_ZERO)
            if SCALE_AFTER:
                part = oriented_dot(q.to(x.dtype), x, None, SWAP)
        if SCALE_AFTER:
            if HAS_ZERO:  # (q - z) . x = q . x - z * sum(x)
                z = tl.load(z_ptr + offs_n * NG + g, mask=n_mask, other=0.0).to(tl.float32)
                part -= by_row(z, SWAP) * by_col(tl.sum(x.to(tl.float32), axis=1), SWAP)
            acc += part * by_row(s, SWAP)
        else:
            if FLOAT_UNPACK and not HAS_ZERO and s_ptr.dtype.element_ty == x_ptr.dtype.element_ty:
                w = q * s.to(x.dtype)[:, None]  # x's type: one rounding of the exact product, as the fp32 form below
            else:
                wq = q.to(tl.float32)
                if HAS_ZERO:
                    wq = wq - tl.load(z_ptr + offs_n * NG + g, mask=n_mask, other=0.0).to(tl.float32)[:, None]
                w = (wq * s[:, None]).to(x.dtype)
            acc = oriented_dot(w, x, acc, SWAP)
    if HAS_XS:
        acc *= by_col(tl.load(xs_ptr + offs_m, mask=m_mask, other=0.0), SWAP)
    tile_store(acc, b_ptr, y_ptr, offs_n, offs_m, n_mask, m_mask, stride_ym, HAS_BIAS, ATOMIC, SWAP)


def float_unpack(dtype) -> bool:
    """Whether the codes unpack straight to floats (unpack.nibble_floats): fp16 / bf16 activations (bf16 only
    compiled: the interpreter's bf16 arithmetic is wrong)."""
    return dtype == torch.float16 or (dtype == torch.bfloat16 and not interpreting())


def w4a16_tc(x2, qweight, scales, zeros, bias, G: int, y, config=None, x_scale=None):
    """x2 [M, K] (unit stride) -> y [M, N] (preallocated); G = the normalized group; config: TC_CONFIGS' keys;
    x2 int8: W4A8's activation codes, row m's step x_scale[m] (fp32 [M]; None: steps folded into the weights')."""
    return w4a16_tc_plan(x2, qweight, scales, zeros, bias, G, y.stride(0), config, x_scale)(
        x2, qweight, scales, zeros, bias, y, x_scale)


def w4a16_tc_plan(x2, qweight, scales, zeros, bias, G: int, stride_ym: int, config=None, x_scale=None):
    """`w4a16_tc` for arguments with this metadata, the config decided and the launch bound once:
    `call(x2, qweight, scales, zeros, bias, y, x_scale) -> y` (y [M, N] of row stride `stride_ym`)."""
    cfg = dict(config or pick(TC_CONFIGS, x2.shape[0]))
    codes = x2.dtype == torch.int8
    cfg.setdefault("FLOAT_UNPACK", float_unpack(torch.float16 if codes else x2.dtype))
    if codes:
        cfg["SCALE_AFTER"] = True  # the dot on the exact codes; steps in fp32 after it
    if cfg.setdefault("PLANES", False):
        fits = planes_fit(cfg, x2.shape[1], G)
        torch._check_value(fits or config is None, lambda: (  # the shipped bucket falls back where it does not fit
            f"w4a16_tc: PLANES needs SWAP, BLOCK_K=128, groups of a multiple of 64 (or per-channel) and fp16 / bf16 "
            f"(compiled) or int8 x; got group {G} at K={x2.shape[1]} and config {cfg}"))
        # 64-wide groups (HALF_GROUPS) on request only: the shipped bucket's plane step is timed for 128-wide ones
        fits = fits and (config is not None or G >= x2.shape[1] or G % 128 == 0)
        cfg["PLANES"] = fits
        cfg["SCALE_AFTER"] = cfg.get("SCALE_AFTER", False) or fits
    cfg["HALF_GROUPS"] = bool(cfg["PLANES"] and G < x2.shape[1] and G % 128)
    operands = (qweight, scales, zeros if zeros is not None else scales, x_scale if x_scale is not None else scales)
    tile = split_k_plan(_w4a16_tc, x2, operands, bias, qweight.shape[0], qweight.shape[1] // 4, scales.shape[1], G,
                        cfg, stride_ym, HAS_ZERO=zeros is not None, HAS_XS=x_scale is not None)

    def call(x2, qweight, scales, zeros, bias, y, x_scale=None):  # the packed bytes: the kernel reads words
        return tile(x2, (qweight, scales, zeros if zeros is not None else scales,
                         x_scale if x_scale is not None else scales), bias, y)
    return call


def planes_fit(cfg: dict, K: int, G: int) -> bool:
    """Whether the nibble-plane K step (`unpack.plane_dot`) takes this config and group: the swap-AB tile, 128-wide
    K steps, each half inside one group (groups of 64: the halves summed apart, HALF_GROUPS), the codes as 16-bit
    floats."""
    return bool(cfg.get("SWAP", True) and cfg["BLOCK_K"] == 128 and (G >= K or G % 64 == 0) and cfg["FLOAT_UNPACK"])
