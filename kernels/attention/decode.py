"""Flash-decoding attention for one query row per head (q_len = 1): `decode_attention_triton`.

Why: at decode, compiled HF calls SDPA with a materialized bool mask over the whole static cache and PyTorch
runs the memory-efficient kernel (35 µs per Llama-3-8B layer for ~3 MB of K/V). Decode attention is one read of
K/V, so it should run at memory bandwidth; that needs many more programs than B * Hkv (8 at batch 1), hence a
split over the keys (split-K, "flash-decoding").

`_decode_split`: one program per (split, batch x KV head). The G = H / Hkv query heads of that KV head form one
[G_PAD, D] tile (G_PAD >= 16 rows so tl.dot applies; rows >= G are masked), so K/V are read once per KV head
(GQA by index, never repeated). Online softmax in fp32 with exp2 over the split's key blocks; a key block that
the mask hides from all G heads is skipped before its K/V are loaded (the unfilled tail of a static cache).
Partial (acc, m, l) go to fp32 scratch.
`_decode_combine`: one program per (batch, query head) merges the splits and writes q's dtype.
A row whose keys are all masked gives 0, not NaN (like PyTorch's math SDPA; docs/attention.md).
Interpreter-safe (bf16 is upcast after loading there: the interpreter's bf16 arithmetic is wrong).
"""
from __future__ import annotations

import math
from typing import Optional

import torch
import triton
import triton.language as tl

from ..tiling import cdiv, next_pow2
from ..checks import check_attention, check_once
from ..runtime import cuda_sms, interpreting
from ..launch import TENSOR, bind
from .dense import token_major_strides

LOG2E = 1.4426950408889634
_LOG2E = tl.constexpr(LOG2E)
MAX_SPLITS = 64  # bounds the combine tile [SPLIT_PAD, D]; 64 splits x 64 keys cover 4096 keys at one block each
PROGRAMS_PER_SM = 2
COMBINE_WARPS = 4

MASK_NONE, MASK_BOOL, MASK_FLOAT = 0, 1, 2


def split_config(D: int) -> dict:
    """Key block and launch options of `_decode_split` for head dim D (smaller blocks keep D = 256 in registers)."""
    return dict(BLOCK_N=64 if D <= 128 else 32, num_warps=4 if D <= 128 else 8, num_stages=2)


@triton.jit
def _attend_block(q, m_i, l_i, acc, k_base, v_base, keys, keep, bias, L, sk_l, sv_l, qk_scale,
                  D: tl.constexpr, MASK_KIND: tl.constexpr, UPCAST: tl.constexpr):
    d = tl.arange(0, D)
    kv_mask = (keys < L)[:, None]
    kt = tl.load(k_base + keys[:, None] * sk_l + d[None, :], mask=kv_mask, other=0.0)
    vt = tl.load(v_base + keys[:, None] * sv_l + d[None, :], mask=kv_mask, other=0.0)
    if UPCAST:
        kt = kt.to(tl.float32)
        vt = vt.to(tl.float32)
    s = tl.dot(q, tl.trans(kt)).to(tl.float32) * qk_scale  # log2 domain: scale * log2(e) folded in
    if MASK_KIND == 2:
        s = s + bias
    s = tl.where(keep, s, -float("inf"))
    m_new = tl.maximum(m_i, tl.max(s, 1))
    # a row with no visible key yet has m_new = -inf: subtract 0 instead so exp2 gives 0, not NaN
    m_safe = tl.where(m_new == -float("inf"), 0.0, m_new)
    alpha = tl.exp2(m_i - m_safe)
    p = tl.exp2(s - m_safe[:, None])
    l_i = l_i * alpha + tl.sum(p, 1)
    acc = acc * alpha[:, None] + tl.dot(p.to(vt.dtype), vt).to(tl.float32)
    return m_new, l_i, acc


@triton.jit
def _decode_split(q_ptr, k_ptr, v_ptr, mask_ptr, acc_ptr, m_ptr, l_ptr,
                  L, Hkv, G, BLOCKS_PER_SPLIT,
                  sq_b, sq_h, sk_b, sk_h, sk_l, sv_b, sv_h, sv_l, sm_b, sm_h, sm_l,
                  qk_scale,
                  D: tl.constexpr, G_PAD: tl.constexpr, BLOCK_N: tl.constexpr, MASK_KIND: tl.constexpr,
                  UPCAST: tl.constexpr):
    split = tl.program_id(0)
    bk = tl.program_id(1)
    nsplit = tl.num_programs(0)
    b = bk // Hkv
    kvh = bk % Hkv
    g = tl.arange(0, G_PAD)
    g_ok = g < G
    h = kvh * G + g  # the query heads that share this KV head
    d = tl.arange(0, D)
    q = tl.load(q_ptr + b * sq_b + h[:, None] * sq_h + d[None, :], mask=g_ok[:, None], other=0.0)
    if UPCAST:
        q = q.to(tl.float32)
    k_base = k_ptr + b * sk_b + kvh * sk_h
    v_base = v_ptr + b * sv_b + kvh * sv_h
    mask_rows = mask_ptr + b * sm_b + h[:, None] * sm_h
    m_i = tl.full([G_PAD], -float("inf"), tl.float32)
    l_i = tl.zeros([G_PAD], tl.float32)
    acc = tl.zeros([G_PAD, D], tl.float32)
    first = split * BLOCKS_PER_SPLIT
    last = tl.minimum(first + BLOCKS_PER_SPLIT, tl.cdiv(L, BLOCK_N))
    for blk in range(first, last):
        keys = blk * BLOCK_N + tl.arange(0, BLOCK_N)
        keep = g_ok[:, None] & (keys < L)[None, :]
        if MASK_KIND == 0:
            m_i, l_i, acc = _attend_block(q, m_i, l_i, acc, k_base, v_base, keys, keep, 0.0, L, sk_l, sv_l,
                                          qk_scale, D, MASK_KIND, UPCAST)
        else:
            if MASK_KIND == 1:
                allowed = tl.load(mask_rows + keys[None, :] * sm_l, mask=keep, other=0)
                keep = keep & (allowed != 0)
                bias = 0.0
            else:  # additive float mask, -inf = masked
                bias = tl.load(mask_rows + keys[None, :] * sm_l, mask=keep, other=-float("inf")).to(tl.float32)
                bias = bias * _LOG2E  # the scores are in the log2 domain
                keep = keep & (bias != -float("inf"))
            # skip the block (no K/V traffic) when no head of the group may see any of its keys
            if tl.max(tl.max(keep.to(tl.int32), 1), 0) > 0:
                m_i, l_i, acc = _attend_block(q, m_i, l_i, acc, k_base, v_base, keys, keep, bias, L, sk_l, sv_l,
                                              qk_scale, D, MASK_KIND, UPCAST)
    row = (b * Hkv * G + h) * nsplit + split  # scratch [B * H, nsplit, (D)]
    tl.store(acc_ptr + row[:, None] * D + d[None, :], acc, mask=g_ok[:, None])
    tl.store(m_ptr + row, m_i, mask=g_ok)
    tl.store(l_ptr + row, l_i, mask=g_ok)


@triton.jit
def _decode_combine(acc_ptr, m_ptr, l_ptr, o_ptr, NSPLIT, D: tl.constexpr, SPLIT_PAD: tl.constexpr):
    bh = tl.program_id(0)
    s = tl.arange(0, SPLIT_PAD)
    s_ok = s < NSPLIT
    d = tl.arange(0, D)
    m = tl.load(m_ptr + bh * NSPLIT + s, mask=s_ok, other=-float("inf"))
    l = tl.load(l_ptr + bh * NSPLIT + s, mask=s_ok, other=0.0)
    m_max = tl.max(m, 0)
    m_max = tl.where(m_max == -float("inf"), 0.0, m_max)  # every key masked: weights 0, output 0
    w = tl.exp2(m - m_max)
    acc = tl.load(acc_ptr + (bh * NSPLIT + s[:, None]) * D + d[None, :], mask=s_ok[:, None], other=0.0)
    out = tl.sum(acc * w[:, None], 0) / tl.maximum(tl.sum(l * w, 0), 1e-30)
    tl.store(o_ptr + bh * D + d, out.to(o_ptr.dtype.element_ty))


# ------------------------------------------------------------------ launcher
def _num_sms(device) -> int:
    if device.type != "cuda":
        return 2  # interpreter: a few programs, enough to exercise several splits
    return cuda_sms(device)


def num_splits(device, batch_kv_heads: int, key_blocks: int, per_sm: int = PROGRAMS_PER_SM) -> int:
    """Splits per (batch, KV head) so that programs ~ per_sm x SMs; no split is left without keys."""
    want = min(MAX_SPLITS, key_blocks, max(1, cdiv(per_sm * _num_sms(device), batch_kv_heads)))
    return cdiv(key_blocks, cdiv(key_blocks, want))


def _mask_fits(mask, q, B, H, L) -> bool:
    if mask is None:
        return True
    if mask.dtype not in (torch.bool, q.dtype) or mask.dim() > 4 or mask.device != q.device:
        return False
    try:
        return tuple(torch.broadcast_shapes(mask.shape, (B, H, 1, L))) == (B, H, 1, L)
    except RuntimeError:
        return False


def _int32_offsets(t) -> bool:
    """The kernel indexes with int32: the last element's offset must fit."""
    return t is None or sum((n - 1) * st for n, st in zip(t.shape, t.stride()) if n > 0) < 2 ** 31


def supported(q, k, v, attn_mask, is_causal: bool, enable_gqa: bool) -> bool:
    """Whether `decode_attention_triton` computes SDPA(q, k, v, attn_mask, is_causal=..., enable_gqa=...)."""
    if q.dim() != 4 or k.dim() != 4 or v.dim() != 4:
        return False
    B, H, S, D = q.shape
    _, Hkv, L, _ = k.shape
    return (S == 1 and L >= 1 and B * H > 0
            and q.dtype in (torch.float16, torch.bfloat16) and k.dtype == q.dtype and v.dtype == q.dtype
            and D in (16, 32, 64, 128, 256) and k.shape[-1] == D and v.shape[-1] == D
            and k.shape[0] == B and tuple(v.shape[:3]) == (B, Hkv, L)
            and Hkv > 0 and H % Hkv == 0 and H // Hkv <= 64 and (enable_gqa or Hkv == H)
            and q.stride(-1) == 1 and k.stride(-1) == 1 and v.stride(-1) == 1  # vector loads along D
            and (not is_causal or (L == 1 and attn_mask is None))  # causal at S = 1 hides keys 1.. (top-left)
            and _mask_fits(attn_mask, q, B, H, L) and all(map(_int32_offsets, (q, k, v, attn_mask))))


def decode_attention_triton(q, k, v, mask: Optional[torch.Tensor], scale: Optional[float],
                            splits: Optional[int] = None, per_sm: Optional[int] = None,
                            config: Optional[dict] = None):
    """SDPA for q [B, H, 1, D], k / v [B, Hkv, L, D] (H % Hkv == 0, GQA by index), mask None, bool (True =
    attend) or additive float, broadcastable to [B, H, 1, L]; any strides (unit stride along D).
    Returns [B, H, 1, D] (in [B, 1, H, D] memory, qpass::attention's layout; q's dtype). `splits` overrides the
    split count (tests); `per_sm` (programs per SM, default PROGRAMS_PER_SM) and `config` (BLOCK_N and launch
    options, default `split_config(D)`) are the tuning knobs benchmarks/decode_attention.py --sweep varies."""
    check_once(check_attention, q, k, v, mask, False, scale, True, "decode_attention_triton")
    torch._check(q.shape[2] == 1, lambda: f"decode_attention_triton: q must hold one query row [B, H, 1, D], "
                                          f"got {list(q.shape)}")
    return decode_plan(q, k, v, mask, scale, splits, per_sm, config)(q, k, v, mask)


def decode_plan(q, k, v, mask: Optional[torch.Tensor], scale: Optional[float], splits: Optional[int] = None,
                per_sm: Optional[int] = None, config: Optional[dict] = None):
    """`decode_attention_triton` for checked arguments with this metadata, as a call `(q, k, v, mask) -> out`:
    splits, mask form and both launches bound once (the attention op's per-signature plan)."""
    B, H, _, D = q.shape
    Hkv, L = k.shape[1], k.shape[2]
    G = H // Hkv
    scale = 1.0 / math.sqrt(D) if scale is None else float(scale)
    cfg = dict(config or split_config(D))
    block_n = cfg.pop("BLOCK_N")
    key_blocks = cdiv(L, block_n)
    nsplit = splits or num_splits(q.device, B * Hkv, key_blocks, per_sm or PROGRAMS_PER_SM)
    per_split = cdiv(key_blocks, min(nsplit, key_blocks))
    nsplit = cdiv(key_blocks, per_split)
    if mask is None:
        kind, sm = MASK_NONE, (0, 0, 0)
    else:
        m = mask.expand(B, H, 1, L)  # broadcast dims get stride 0
        kind = MASK_BOOL if m.dtype == torch.bool else MASK_FLOAT
        sm = (m.stride(0), m.stride(1), m.stride(3))
    split = bind(_decode_split, (nsplit, B * Hkv), [TENSOR] * 7 + [
        L, Hkv, G, per_split, q.stride(0), q.stride(1), k.stride(0), k.stride(1), k.stride(2), v.stride(0),
        v.stride(1), v.stride(2), *sm, scale * LOG2E],
        dict(D=D, G_PAD=max(16, next_pow2(G)), BLOCK_N=block_n, MASK_KIND=kind,
             UPCAST=interpreting() and q.dtype == torch.bfloat16, **cfg))
    combine = bind(_decode_combine, (B * H,), [TENSOR] * 4 + [nsplit],
                   dict(D=D, SPLIT_PAD=max(2, next_pow2(nsplit)),
                        num_warps=COMBINE_WARPS if D <= 128 else 2 * COMBINE_WARPS))
    dtype, device = q.dtype, q.device
    out_strides = token_major_strides((B, H, 1, D))

    def call(q, k, v, mask):
        if kind == MASK_NONE:
            m = q  # never read
        else:
            m = mask.expand(B, H, 1, L)
            m = m.view(torch.int8) if kind == MASK_BOOL else m
        acc = torch.empty(B * H, nsplit, D, dtype=torch.float32, device=device)
        m_part = torch.empty(B * H, nsplit, dtype=torch.float32, device=device)
        l_part = torch.empty(B * H, nsplit, dtype=torch.float32, device=device)
        # qpass::attention's layout (with one query row the same addresses as a contiguous [B, H, 1, D])
        out = torch.empty_strided((B, H, 1, D), out_strides, dtype=dtype, device=device)
        split(q, k, v, m, acc, m_part, l_part)
        combine(acc, m_part, l_part, out)
        return out
    return call


def shipped_configs():
    """[(name, kernel, signature, constexprs, options)] for the sm_90 compile check (kernels/configs.py format)."""
    out = []
    ints = ("L", "Hkv", "G", "BLOCKS_PER_SPLIT", "sq_b", "sq_h", "sk_b", "sk_h", "sk_l", "sv_b", "sv_h", "sv_l",
            "sm_b", "sm_h", "sm_l")
    for dt in ("*fp16", "*bf16"):
        for D in (64, 128, 256):
            cfg = split_config(D)
            block_n = cfg.pop("BLOCK_N")
            for kind, mask_t in ((MASK_NONE, dt), (MASK_BOOL, "*i8"), (MASK_FLOAT, dt)):
                for g_pad in ((16, 64) if D == 128 and kind == MASK_BOOL else (16,)):
                    sig = dict(q_ptr=dt, k_ptr=dt, v_ptr=dt, mask_ptr=mask_t, acc_ptr="*fp32", m_ptr="*fp32",
                               l_ptr="*fp32", **{n: "i32" for n in ints}, qk_scale="fp32")
                    out.append((f"decode_attn_split[{dt},D={D},mask={kind},G_PAD={g_pad}]", _decode_split, sig,
                                dict(D=D, G_PAD=g_pad, BLOCK_N=block_n, MASK_KIND=kind, UPCAST=False), cfg))
            for pad in (2, MAX_SPLITS):
                csig = dict(acc_ptr="*fp32", m_ptr="*fp32", l_ptr="*fp32", o_ptr=dt, NSPLIT="i32")
                out.append((f"decode_attn_combine[{dt},D={D},SPLIT_PAD={pad}]", _decode_combine, csig,
                            dict(D=D, SPLIT_PAD=pad),
                            dict(num_warps=COMBINE_WARPS if D <= 128 else 2 * COMBINE_WARPS)))
    return out
