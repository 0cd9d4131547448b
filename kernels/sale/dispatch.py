"""SALE launchers: quantize (sale/quantize.py) -> estimate + select (v1 sale/select.py or v2 sale/select2.py) ->
block-sparse flash attention (sale/attention.py). Layout q [B, H, S, D], k / v [B, Hkv, S, D], any strides on the
last-but-one dims (the launchers pass them), GQA by head index (no repeat_kv copy). Same math as sale/reference.py.

Every choice is a keyword argument with the shipped default (no environment variables): `impl` (select kernel),
`qb`, `bias_mma`, `split`, `kb`, `launch` (num_warps / num_stages), `fp8` for select; `npi`, `launch` for attention.
Defaults from `benchmarks/attention.py --quick` on the H100 (docs/sale.md "Kernel v2"): at 64K select v2 (split exact
pass + bias MMA) 5.6 ms vs v1 12.4 (P 16), attention v2 8.9 vs v1 10.1 ms (v1: benchmarks/variants/); at full
resolution select v1 is faster (42.4 vs 48.6 ms), so "auto" = v2 only for pooled estimates (P >= SELECT2_MIN_POOL).
"""
from __future__ import annotations

import math

import torch

from ..tiling import cdiv
from ..checks import check_sale_blocks, check_sale_kernel_args
from ..runtime import interpreting
from .attention import _sale_attn2_kernel, attn2_config, attn2_tail
from .quantize import pool_quantize_q, sale_quantize_triton, use_fp8, x8_dtype
from .reference import TAU_DENSE, group_union, mask_to_index, unpack_int4_halves
from .select import NO_WINDOW, _sale_select_kernel, _sale_thr_kernel, THR_CONFIG, key_blocks, select_config
from .select2 import _sale_select2_kernel, select2_blocks, select2_config

LOG2E = 1.4426950408889634
SELECT_IMPL = "auto"
SELECT2_MIN_POOL = 8
SELECT2_SPLIT = True  # select v2: exact pass in its own kernel (`_sale_thr_kernel`)
SELECT2_BIAS_MMA = True  # select v2: key bias by a one-hot fp16 MMA instead of per-head selects
ATTN2_NPI = 1  # kept blocks per unmasked iteration of attention (2: 128-key tiles; faster at 64K, slower at 128K)


def select_impl(impl=None, pool=1):
    """Estimate/select kernel: "v1" (`_sale_select_kernel`) or "v2" (`_sale_select2_kernel`); "auto" (the default,
    SELECT_IMPL): v2 for pooled estimates (pool >= SELECT2_MIN_POOL), v1 at full resolution."""
    impl = impl or SELECT_IMPL
    if impl == "auto":
        impl = "v2" if pool >= SELECT2_MIN_POOL else "v1"
    assert impl in ("v1", "v2"), impl
    return impl


def _stacked_heads(group, G, block_m):
    """Query heads stacked per program: the KV group when its size is a power of two (and the tile fits), else 1."""
    return G if (group and G > 1 and (G & (G - 1)) == 0 and G * block_m <= 512) else 1


def _outputs(B, NG, S, block_m, block_n, device):
    nqb, nkb = cdiv(S, block_m), cdiv(S, block_n)
    return (torch.zeros(B, NG, nqb, nkb, dtype=torch.int32, device=device),
            torch.empty(B, NG, nqb, dtype=torch.int32, device=device),
            torch.zeros(B, NG, nqb, nkb, dtype=torch.int8, device=device))


def _per_head(idx, cnt, mask, GS, group, G, Hkv):
    """Per-group outputs repeated to the query heads; a group not stacked in the kernel gets its union here."""
    if GS > 1:
        return tuple(t.repeat_interleave(GS, 1) for t in (idx, cnt, mask))
    if group and G > 1:  # group size not a power of two (or too many rows): per-head kernel, union here
        m = group_union(mask.bool(), Hkv)
        idx, cnt = mask_to_index(m)
        return idx, cnt, m.to(torch.int8)
    return idx, cnt, mask


def sale_select_triton(q, k, tau, scale, block_m=64, block_n=64, sink=64, window=256, tau_dense=TAU_DENSE,
                       quant=None, group=True, pool=1, impl=None, qb=None, bias_mma=None, split=None, kb=None,
                       launch=None, fp8=None, model_window=None):
    """(kv_idx [B, H, nQB, nKB] int32, kv_cnt [B, H, nQB] int32, mask [B, H, nQB, nKB] int8).
    group=True: one block map per KV group (the union of its query heads' selections; see docs/sale.md).
    pool > 1: coarse estimate from mean-pooled query rows (`pool` rows each; power of two dividing block_m;
    reference `sale/reference.sale_block_scores_ref(..., pool=pool)`).  impl: "v1" / "v2" / "auto" (`select_impl`;
    same decisions); v2 only: qb (query blocks per program, `select2_blocks`), bias_mma (default SELECT2_BIAS_MMA),
    split (default SELECT2_SPLIT); kb: key blocks per estimate step (`key_blocks`); launch: dict(num_warps,
    num_stages) of the select kernel; fp8: estimate operands in fp8 (default: on Hopper+, `quantize.use_fp8`);
    model_window: the model's sliding window (None: full causal; blocks outside it are never scored nor kept)."""
    check_sale_kernel_args(q, k, op="sale_select_triton")
    check_sale_blocks(block_m, block_n, pool, "sale_select_triton")
    B, H, S, D = q.shape
    Hkv = k.shape[1]
    G = H // Hkv
    GS = _stacked_heads(group, G, block_m)
    v2 = select_impl(impl, pool) == "v2"
    quant = sale_quantize_triton(q, k, unpack=v2, fp8=fp8) if quant is None else quant
    q_pack, q_scale, q_bias, k_pack, k_scale, k_bias = quant[:6]
    if pool > 1:
        q_pack, q_scale = pool_quantize_q(q, pool)
    NG = H // GS
    idx, cnt, mask = _outputs(B, NG, S, block_m, block_n, q.device)
    thr = torch.empty(B * H, S, dtype=torch.float32, device=q.device)
    tau = torch.as_tensor(tau, dtype=torch.float32, device=q.device).reshape(-1).expand(H).contiguous()
    nqb = idx.shape[2]
    common = (S, H, G, q.stride(0), q.stride(1), q.stride(2), k.stride(0), k.stride(1), k.stride(2),
              scale * LOG2E, tau_dense, cdiv(sink, block_n), window, _mwin(model_window))
    if not v2:
        pr = max(GS * block_m // pool, 16)
        _sale_select_kernel[(nqb, B * NG)](
            q, k, q_pack, q_scale, q_bias, k_pack, k_scale, k_bias, tau, thr, idx, cnt, mask, *common,
            D=D, BLOCK_M=block_m, BLOCK_N=block_n, GS=GS, POOL=pool, PR=pr, KB=key_blocks(pr, block_n, kb),
            F8=use_fp8(fp8), **select_config(pr, launch))
        return _per_head(idx, cnt, mask, GS, group, G, Hkv)
    if len(quant) > 6:
        k_x = quant[6]
    else:  # a v1 quant tuple: unpack the keys here
        k_x = unpack_int4_halves(k_pack)
        k_x = k_x.to(torch.float16).to(x8_dtype(fp8)) if x8_dtype(fp8) != torch.int8 else k_x.contiguous()
    QB, RQ = select2_blocks(GS, block_m, pool, qb)
    split = SELECT2_SPLIT if split is None else bool(split)
    bias_mma = SELECT2_BIAS_MMA if bias_mma is None else bool(bias_mma)
    if split:
        _sale_thr_kernel[(nqb, B * H)](q, k, q_bias, tau, thr, *common, D=D, BLOCK_M=block_m, BLOCK_N=block_n,
                                       **THR_CONFIG)
    _sale_select2_kernel[(cdiv(nqb, QB), B * NG)](
        q, k, q_pack, q_scale, q_bias, k_x, k_scale, k_bias, tau, thr, idx, cnt, mask, *common,
        D=D, BLOCK_M=block_m, BLOCK_N=block_n, GS=GS, POOL=pool, QB=QB, RQ=RQ, KB=key_blocks(QB * RQ, block_n, kb),
        F8=k_x.dtype != torch.int8, BIAS_MMA=bias_mma, SPLIT=split, **select2_config(QB * RQ, split, launch))
    return _per_head(idx, cnt, mask, GS, group, G, Hkv)


def _mwin(model_window):
    return NO_WINDOW if model_window is None else int(model_window)


def sale_sparse_attention_triton(q, k, v, idx, cnt, scale, block_m=64, block_n=64, npi=None, launch=None,
                                 model_window=None):
    """Flash attention over the kept blocks (idx / cnt from `sale_select_triton`): [B, H, S, D] like q.
    npi: kept blocks per unmasked iteration (1 or 2; default ATTN2_NPI); launch: dict(num_warps, num_stages)
    (default `attention.attn2_config`); model_window: the model's sliding window (element mask at its edge)."""
    npi = npi or ATTN2_NPI
    check_sale_kernel_args(q, k, v, op="sale_sparse_attention_triton")
    check_sale_blocks(block_m, block_n, 1, "sale_sparse_attention_triton")
    B, H, S, D = q.shape
    G = H // k.shape[1]
    o = torch.empty_like(q)
    _sale_attn2_kernel[(cdiv(S, block_m), B * H)](
        q, k, v, o, idx, cnt, S, H, G, q.stride(0), q.stride(1), q.stride(2), k.stride(0), k.stride(1),
        k.stride(2), v.stride(0), v.stride(1), v.stride(2), o.stride(0), o.stride(1), o.stride(2),
        scale * LOG2E, _mwin(model_window), D=D, BLOCK_M=block_m, BLOCK_N=block_n,
        UPCAST=interpreting() and q.dtype == torch.bfloat16, ND=attn2_tail(block_m, block_n), NPI=npi,
        **attn2_config(D, launch))
    return o


def sale_attention_triton(q, k, v, tau, scale=None, block_m=64, block_n=64, sink=64, window=256,
                          tau_dense=TAU_DENSE, group=True, pool=1, select=None, model_window=None):
    """Estimate + select + sparse attention; select: the select kernel (`select_impl`); model_window: the model's
    sliding window (None: full causal)."""
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    check_sale_kernel_args(q, k, v, op="sale_attention_triton")
    idx, cnt, _ = sale_select_triton(q, k, tau, scale, block_m, block_n, sink, window, tau_dense, group=group,
                                     pool=pool, impl=select, model_window=model_window)
    return sale_sparse_attention_triton(q, k, v, idx, cnt, scale, block_m, block_n, model_window=model_window)
