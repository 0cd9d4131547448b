"""SALE int4 Q/K quantization (`_sale_quant_kernel`): one program per (BLOCK_R rows, head): mean-subtracted int4
rows, packed two per byte (dim c | dim c + D/2 << 4), per-row fp32 scales, and the mean-term biases; optionally
the keys' int4 values unpacked to [S, D] fp8 / int8 (the operand of select v2). Same math as sale/reference.py.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from ..tiling import cdiv
from ..checks import check_sale_kernel_args
from ..runtime import interpreting

QUANT_CONFIG = dict(BLOCK_R=64, num_warps=4, num_stages=1)  # shipped (sale/configs.py)


def use_fp8(fp8=None) -> bool:
    """fp8 (e4m3) estimate operands: `fp8` when given, else on the GPU (Hopper+), int8 in the interpreter."""
    if fp8 is not None:
        return bool(fp8)
    return not interpreting() and torch.cuda.is_available() and torch.cuda.get_device_capability() >= (8, 9)


def x8_dtype(fp8=None):
    """The dtype of unpacked int4 estimate operands (fp8 e4m3 or int8, `use_fp8`)."""
    return torch.float8_e4m3fn if use_fp8(fp8) else torch.int8


@triton.jit
def _sale_quant_kernel(x_ptr, mean_ptr, other_ptr, pack_ptr, scale_ptr, bias_ptr, x8_ptr,
                       S, NH, sx_b, sx_h, sx_s,
                       D: tl.constexpr, BLOCK_R: tl.constexpr, NB: tl.constexpr, DIV: tl.constexpr,
                       BIAS_RAW: tl.constexpr, UNPACK: tl.constexpr = False):
    """Rows x[b, h, r, :] -> pack [bh, r, D/2] int8, scale [bh, r] fp32; bias[bh*NB + g, r] =
    (x or x̃)[r] · other[(bh // DIV) * NB + g] for g < NB.  UNPACK: also the int4 values unpacked, in dim order,
    to x8 [bh, r, D] (fp8 e4m3 or int8: the estimate operand of `_sale_select2_kernel`, no in-loop unpack)."""
    pid_r = tl.program_id(0)
    bh = tl.program_id(1)
    b = bh // NH
    h = bh % NH
    D2: tl.constexpr = D // 2
    rows = pid_r * BLOCK_R + tl.arange(0, BLOCK_R)
    cols = tl.arange(0, D2)
    rmask = rows < S
    base = x_ptr + b * sx_b + h * sx_h + rows[:, None] * sx_s
    x_lo = tl.load(base + cols[None, :], mask=rmask[:, None], other=0.0).to(tl.float32)
    x_hi = tl.load(base + D2 + cols[None, :], mask=rmask[:, None], other=0.0).to(tl.float32)
    mu_lo = tl.load(mean_ptr + bh * D + cols)
    mu_hi = tl.load(mean_ptr + bh * D + D2 + cols)
    c_lo = x_lo - mu_lo[None, :]
    c_hi = x_hi - mu_hi[None, :]
    amax = tl.maximum(tl.max(tl.abs(c_lo), 1), tl.max(tl.abs(c_hi), 1))
    scale = amax / 7.0
    inv = tl.where(scale > 0, 1.0 / scale, 0.0)
    q_lo = (c_lo * inv[:, None] + 12582912.0) - 12582912.0  # round half to even
    q_hi = (c_hi * inv[:, None] + 12582912.0) - 12582912.0
    q_lo = tl.minimum(tl.maximum(q_lo, -7.0), 7.0).to(tl.int32)
    q_hi = tl.minimum(tl.maximum(q_hi, -7.0), 7.0).to(tl.int32)
    p = (q_lo & 0xF) | ((q_hi & 0xF) << 4)
    p = tl.where(p > 127, p - 256, p).to(tl.int8)
    tl.store(pack_ptr + bh * S * D2 + rows[:, None] * D2 + cols[None, :], p, mask=rmask[:, None])
    tl.store(scale_ptr + bh * S + rows, scale, mask=rmask)
    if UNPACK:  # exact small integers; fp32 -> fp16 -> target (fp8 e4m3 or int8)
        x8_base = x8_ptr + bh * S * D + rows[:, None] * D + cols[None, :]
        tl.store(x8_base, q_lo.to(tl.float16).to(x8_ptr.dtype.element_ty), mask=rmask[:, None])
        tl.store(x8_base + D2, q_hi.to(tl.float16).to(x8_ptr.dtype.element_ty), mask=rmask[:, None])
    if BIAS_RAW:
        b_lo, b_hi = x_lo, x_hi
    else:
        b_lo, b_hi = c_lo, c_hi
    for g in tl.static_range(NB):
        orow = (bh // DIV) * NB + g
        o_lo = tl.load(other_ptr + orow * D + cols)
        o_hi = tl.load(other_ptr + orow * D + D2 + cols)
        bias = tl.sum(b_lo * o_lo[None, :], 1) + tl.sum(b_hi * o_hi[None, :], 1)
        tl.store(bias_ptr + (bh * NB + g) * S + rows, bias, mask=rmask)


def sale_quantize_triton(q, k, unpack=False, fp8=None):
    """(q_pack, q_scale, q_bias, k_pack, k_scale, k_bias) as in `sale/reference.QKQuant`, flattened over
    (batch, head): q_pack [B*H, S, D/2] int8, scales / biases [B*H(kv), S] fp32.  unpack=True appends k_x
    [B*Hkv, S, D]: the keys' int4 values unpacked in dim order (`x8_dtype(fp8)`: fp8 e4m3 on Hopper, else int8;
    select v2)."""
    check_sale_kernel_args(q, k)
    B, H, S, D = q.shape
    Hkv = k.shape[1]
    G = H // Hkv
    q_mean = q.mean(2, dtype=torch.float32).reshape(B * H, D).contiguous()
    k_mean = k.mean(2, dtype=torch.float32).reshape(B * Hkv, D).contiguous()
    dev = q.device
    q_pack = torch.empty(B * H, S, D // 2, dtype=torch.int8, device=dev)
    k_pack = torch.empty(B * Hkv, S, D // 2, dtype=torch.int8, device=dev)
    q_scale = torch.empty(B * H, S, dtype=torch.float32, device=dev)
    k_scale = torch.empty(B * Hkv, S, dtype=torch.float32, device=dev)
    q_bias = torch.empty(B * H, S, dtype=torch.float32, device=dev)
    k_bias = torch.empty(B * H, S, dtype=torch.float32, device=dev)
    c = QUANT_CONFIG
    _sale_quant_kernel[(cdiv(S, c["BLOCK_R"]), B * H)](
        q, q_mean, k_mean, q_pack, q_scale, q_bias, q_pack, S, H, q.stride(0), q.stride(1), q.stride(2),
        D=D, BLOCK_R=c["BLOCK_R"], NB=1, DIV=G, BIAS_RAW=True, num_warps=c["num_warps"], num_stages=c["num_stages"])
    k_x = torch.empty(B * Hkv, S, D, dtype=x8_dtype(fp8), device=dev) if unpack else k_pack
    _sale_quant_kernel[(cdiv(S, c["BLOCK_R"]), B * Hkv)](
        k, k_mean, q_mean, k_pack, k_scale, k_bias, k_x, S, Hkv, k.stride(0), k.stride(1), k.stride(2),
        D=D, BLOCK_R=c["BLOCK_R"], NB=G, DIV=1, BIAS_RAW=False, UNPACK=unpack, num_warps=c["num_warps"],
        num_stages=c["num_stages"])
    if unpack:
        return q_pack, q_scale, q_bias, k_pack, k_scale, k_bias, k_x
    return q_pack, q_scale, q_bias, k_pack, k_scale, k_bias


def pool_quantize_q(q, pool):
    """Mean-pooled query rows (pool consecutive rows; a short last group averages its valid rows), quantized like
    the full rows (mean-subtracted int4, per-row scale): (pack [B*H, ceil(S/pool), D/2], scale)."""
    B, H, S, D = q.shape
    SP = cdiv(S, pool)
    if S % pool == 0:
        qpool = q.reshape(B, H, SP, pool, D).mean(3, dtype=torch.float32)
    else:
        qf = torch.nn.functional.pad(q.float(), (0, 0, 0, SP * pool - S))
        cnt = torch.full((SP,), float(pool), device=q.device)
        cnt[-1] = S - (SP - 1) * pool
        qpool = (qf.view(B, H, SP, pool, D).sum(3) / cnt[:, None]).contiguous()
    q_mean = q.mean(2, dtype=torch.float32).reshape(B * H, D).contiguous()
    pack = torch.empty(B * H, SP, D // 2, dtype=torch.int8, device=q.device)
    scale = torch.empty(B * H, SP, dtype=torch.float32, device=q.device)
    bias = torch.empty(B * H, SP, dtype=torch.float32, device=q.device)
    c = QUANT_CONFIG
    _sale_quant_kernel[(cdiv(SP, c["BLOCK_R"]), B * H)](
        qpool, q_mean, q_mean, pack, scale, bias, pack, SP, H, qpool.stride(0), qpool.stride(1), qpool.stride(2),
        D=D, BLOCK_R=c["BLOCK_R"], NB=1, DIV=1, BIAS_RAW=True, num_warps=c["num_warps"], num_stages=c["num_stages"])
    return pack, scale
