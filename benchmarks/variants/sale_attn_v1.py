"""SALE sparse attention v1 (`_sale_attn_kernel`): every kept block with the causal / length mask, query blocks in
order. Lost to the shipped kernel (qpass.kernels.sale.attention, "v2": unmasked below the diagonal, heaviest blocks
first; H100 64K: 10.1 vs 8.9 ms); kept for benchmarks/attention.py's v1-vs-v2 comparison.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from qpass.kernels.checks import check_sale_blocks, check_sale_kernel_args
from qpass.kernels.runtime import interpreting
from qpass.kernels.sale.attention import _attend_masked_block, _query_tile, _store_tile
from qpass.kernels.sale.dispatch import LOG2E

ATTN_CONFIG = {64: dict(num_warps=4, num_stages=3), 128: dict(num_warps=8, num_stages=2)}  # by head dim


@triton.jit
def _sale_attn_kernel(q_ptr, k_ptr, v_ptr, o_ptr, idx_ptr, cnt_ptr,
                      S, H, G, sq_b, sq_h, sq_s, sk_b, sk_h, sk_s, sv_b, sv_h, sv_s, so_b, so_h, so_s,
                      qk_scale,
                      D: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, UPCAST: tl.constexpr):
    qblk = tl.program_id(0)
    bh = tl.program_id(1)
    NKB = tl.cdiv(S, BLOCK_N)
    NQB = tl.cdiv(S, BLOCK_M)
    b, h, rows, q, k_base, v_base = _query_tile(q_ptr, k_ptr, v_ptr, qblk, bh, S, H, G, sq_b, sq_h, sq_s, sk_b, sk_h,
                                                sv_b, sv_h, D, BLOCK_M, UPCAST)
    out_row = bh * NQB + qblk
    n = tl.load(cnt_ptr + out_row)
    m_i = tl.full([BLOCK_M], -float("inf"), tl.float32)
    l_i = tl.zeros([BLOCK_M], tl.float32)
    acc = tl.zeros([BLOCK_M, D], tl.float32)
    for t in range(0, n):
        kb = tl.load(idx_ptr + out_row * NKB + t)
        m_i, l_i, acc = _attend_masked_block(q, m_i, l_i, acc, k_base, v_base, kb, rows, S, sk_s, sv_s, qk_scale,
                                             1 << 30, D, BLOCK_N, UPCAST)  # v1: full causal only
    _store_tile(o_ptr, acc, l_i, b, h, rows, S, so_b, so_h, so_s, D)


def sale_sparse_attention_v1(q, k, v, idx, cnt, scale, block_m=64, block_n=64):
    """Same arguments and result as qpass.kernels.sale.dispatch.sale_sparse_attention_triton."""
    check_sale_kernel_args(q, k, v, op="sale_sparse_attention_v1")
    check_sale_blocks(block_m, block_n, 1, "sale_sparse_attention_v1")
    B, H, S, D = q.shape
    G = H // k.shape[1]
    o = torch.empty_like(q)
    _sale_attn_kernel[(triton.cdiv(S, block_m), B * H)](
        q, k, v, o, idx, cnt, S, H, G, q.stride(0), q.stride(1), q.stride(2), k.stride(0), k.stride(1),
        k.stride(2), v.stride(0), v.stride(1), v.stride(2), o.stride(0), o.stride(1), o.stride(2),
        scale * LOG2E, D=D, BLOCK_M=block_m, BLOCK_N=block_n,
        UPCAST=interpreting() and q.dtype == torch.bfloat16, **ATTN_CONFIG[D])
    return o


def shipped_configs():
    """Its configs, for the sm_90 compile check (tests/kernels/test_compile_sm90.py)."""
    out = []
    for dt in ("*fp16", "*bf16"):
        for D in (64, 128):
            for bm, bn in ((64, 64), (128, 64)):
                asig = dict(q_ptr=dt, k_ptr=dt, v_ptr=dt, o_ptr=dt, idx_ptr="*i32", cnt_ptr="*i32", S="i32",
                            H="i32", G="i32", **{f"s{t}_{a}": "i32" for t in "qkvo" for a in "bhs"},
                            qk_scale="fp32")
                out.append((f"sale_attn[{dt},D={D},{bm}x{bn}]", _sale_attn_kernel, asig,
                            dict(D=D, BLOCK_M=bm, BLOCK_N=bn, UPCAST=False), dict(ATTN_CONFIG[D])))
    return out
