"""W4A16: fp16/bf16/fp32 activations x int4 weights (format: formats.pack_int4) with group scales.

Two kernels, chosen by M:
  * _gemv: M = 1 (decode).  CUDA cores.  Each nibble becomes a float by OR-ing it into the mantissa of
    2**23 (one LOP3 + one FADD instead of shift/and/I2F); nibbles above bit 16 are taken from `word >> 16`
    so the value stays below 2**23, and the matching x is pre-scaled by 16**-j (exact).  Signed weights are
    turned into offset binary (q + 8) with one XOR per word; the offset is removed per group as 8 * sum(x).
  * _tc: M >= 2.  Tensor cores, "swap AB": acc[N-tile, M-tile] = W_deq . X^T, so the weight tile fills the
    >= 64-row slot of wgmma even for small M.  Dequantize in registers, one scale multiply per element.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from .checks import check_w4a16
from .formats import as_words, norm_group
from .tiling import grouped_tile
from .gemv import gemv4_supported, w4a16_gemv4

_XOR8 = tl.constexpr(-2004318072)  # 0x88888888 as int32
_MAGIC = tl.constexpr(1258291200)  # 0x4B000000 = bits of 2**23


@triton.jit
def _w4a16_gemv(x_ptr, w_ptr, s_ptr, z_ptr, b_ptr, y_ptr, N, K, KW, NG, G, stride_xm, stride_ym,
                HAS_ZERO: tl.constexpr, HAS_BIAS: tl.constexpr,
                BLOCK_N: tl.constexpr, BLOCK_KW: tl.constexpr):
    pid_n = tl.program_id(0)
    m = tl.program_id(1)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    n_mask = offs_n < N
    offs_w = tl.arange(0, BLOCK_KW)
    acc = tl.zeros([BLOCK_N, BLOCK_KW], dtype=tl.float32)
    x_row = x_ptr + m * stride_xm
    for kw0 in range(0, KW, BLOCK_KW):
        wi = kw0 + offs_w
        wmask = n_mask[:, None] & (wi < KW)[None, :]
        words = tl.load(w_ptr + offs_n[:, None] * KW + wi[None, :], mask=wmask, other=0)
        if not HAS_ZERO:
            words = words ^ _XOR8  # two's complement -> offset binary (q + 8)
        # every word lies inside one group (G % 8 == 0 or per-channel): one scale per word
        g = (wi * 8) // G
        smask = wmask & (g < NG)[None, :]
        s = tl.load(s_ptr + offs_n[:, None] * NG + g[None, :], mask=smask, other=0.0).to(tl.float32)
        hi = words >> 16
        p = tl.zeros([BLOCK_N, BLOCK_KW], dtype=tl.float32)
        xs = tl.zeros([BLOCK_KW], dtype=tl.float32)
        for i in tl.static_range(8):
            k = wi * 8 + i
            xv = tl.load(x_row + k, mask=k < K, other=0.0).to(tl.float32)
            xs += xv
            if i < 4:
                v = (words & (15 << (4 * i))) | _MAGIC
            else:
                v = (hi & (15 << (4 * (i - 4)))) | _MAGIC
            f = v.to(tl.float32, bitcast=True) - 8388608.0  # = nibble * 16**(i % 4), exact
            p += f * (xv * (1.0 / (16 ** (i % 4))))[None, :]
        if HAS_ZERO:
            z = tl.load(z_ptr + offs_n[:, None] * NG + g[None, :], mask=smask, other=0.0).to(tl.float32)
            acc += s * (p - z * xs[None, :])
        else:
            acc += s * (p - 8.0 * xs[None, :])
    y = tl.sum(acc, axis=1)
    if HAS_BIAS:
        y += tl.load(b_ptr + offs_n, mask=n_mask, other=0.0).to(tl.float32)
    tl.store(y_ptr + m * stride_ym + offs_n, y.to(y_ptr.dtype.element_ty), mask=n_mask)


@triton.jit
def _w4a16_gemv3(x_ptr, w_ptr, s_ptr, z_ptr, b_ptr, y_ptr, N, K, KW, NG, G, stride_xm, stride_ym,
                 HAS_ZERO: tl.constexpr, HAS_BIAS: tl.constexpr,
                 BLOCK_N: tl.constexpr, BLOCK_KW: tl.constexpr):
    # 3-D variant: [rows, words, nibbles]; x is loaded as contiguous [words, 8] (16-byte vectors)
    pid_n = tl.program_id(0)
    m = tl.program_id(1)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    n_mask = offs_n < N
    offs_w = tl.arange(0, BLOCK_KW)
    offs_i = tl.arange(0, 8)
    acc = tl.zeros([BLOCK_N, BLOCK_KW], dtype=tl.float32)
    x_row = x_ptr + m * stride_xm
    for kw0 in range(0, KW, BLOCK_KW):
        wi = kw0 + offs_w
        wmask = n_mask[:, None] & (wi < KW)[None, :]
        words = tl.load(w_ptr + offs_n[:, None] * KW + wi[None, :], mask=wmask, other=0)
        if not HAS_ZERO:
            words = words ^ _XOR8
        nib = ((words[:, :, None] >> (offs_i * 4)[None, None, :]) & 15) | _MAGIC
        f = nib.to(tl.float32, bitcast=True) - 8388608.0
        k = (wi * 8)[:, None] + offs_i[None, :]
        x2 = tl.load(x_row + k, mask=k < K, other=0.0).to(tl.float32)
        p = tl.sum(f * x2[None, :, :], axis=2)
        xs = tl.sum(x2, axis=1)
        g = (wi * 8) // G
        smask = wmask & (g < NG)[None, :]
        s = tl.load(s_ptr + offs_n[:, None] * NG + g[None, :], mask=smask, other=0.0).to(tl.float32)
        if HAS_ZERO:
            z = tl.load(z_ptr + offs_n[:, None] * NG + g[None, :], mask=smask, other=0.0).to(tl.float32)
            acc += s * (p - z * xs[None, :])
        else:
            acc += s * (p - 8.0 * xs[None, :])
    y = tl.sum(acc, axis=1)
    if HAS_BIAS:
        y += tl.load(b_ptr + offs_n, mask=n_mask, other=0.0).to(tl.float32)
    tl.store(y_ptr + m * stride_ym + offs_n, y.to(y_ptr.dtype.element_ty), mask=n_mask)


@triton.jit
def _w4a16_gemv2(x_ptr, w_ptr, s_ptr, z_ptr, b_ptr, y_ptr, N, K, KW, NG, stride_xm, stride_ym,
                 GW: tl.constexpr, HAS_ZERO: tl.constexpr, HAS_BIAS: tl.constexpr,
                 BLOCK_N: tl.constexpr, BLOCK_KW: tl.constexpr):
    # Same decode as _w4a16_gemv, but the tile is [BLOCK_N, 128 * num_warps] words: the load layout then
    # gives each thread all BLOCK_N rows x 4 consecutive words (one 16-byte load per row), so the x values
    # (and their pre-scaling and sums) of those 4 words are shared by BLOCK_N rows in registers.
    # GW = words per group (constexpr, 0 = one group per row): the scale index is known per word.
    pid_n = tl.program_id(0)
    m = tl.program_id(1)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    n_mask = offs_n < N
    offs_w = tl.arange(0, BLOCK_KW)
    acc = tl.zeros([BLOCK_N, BLOCK_KW], dtype=tl.float32)
    x_row = x_ptr + m * stride_xm
    for kw0 in range(0, KW, BLOCK_KW):
        wi = kw0 + offs_w
        wmask = n_mask[:, None] & (wi < KW)[None, :]
        words = tl.load(w_ptr + offs_n[:, None] * KW + wi[None, :], mask=wmask, other=0)
        if not HAS_ZERO:
            words = words ^ _XOR8
        if GW == 0:
            g = wi * 0
        else:
            g = wi // GW
        s = tl.load(s_ptr + offs_n[:, None] * NG + g[None, :], mask=wmask, other=0.0).to(tl.float32)
        hi = words >> 16
        p = tl.zeros([BLOCK_N, BLOCK_KW], dtype=tl.float32)
        xs = tl.zeros([BLOCK_KW], dtype=tl.float32)
        for i in tl.static_range(8):
            k = wi * 8 + i
            xv = tl.load(x_row + k, mask=k < K, other=0.0).to(tl.float32)
            xs += xv
            if i < 4:
                v = (words & (15 << (4 * i))) | _MAGIC
            else:
                v = (hi & (15 << (4 * (i - 4)))) | _MAGIC
            f = v.to(tl.float32, bitcast=True) - 8388608.0
            p += f * (xv * (1.0 / (16 ** (i % 4))))[None, :]
        if HAS_ZERO:
            z = tl.load(z_ptr + offs_n[:, None] * NG + g[None, :], mask=wmask, other=0.0).to(tl.float32)
            acc += s * (p - z * xs[None, :])
        else:
            acc += s * (p - 8.0 * xs[None, :])
    y = tl.sum(acc, axis=1)
    if HAS_BIAS:
        y += tl.load(b_ptr + offs_n, mask=n_mask, other=0.0).to(tl.float32)
    tl.store(y_ptr + m * stride_ym + offs_n, y.to(y_ptr.dtype.element_ty), mask=n_mask)


@triton.jit
def _w4a16_mm(x_ptr, w_ptr, s_ptr, z_ptr, b_ptr, y_ptr, M, N, K, KW, NG, G, stride_xm, stride_ym,
              HAS_ZERO: tl.constexpr, HAS_BIAS: tl.constexpr, SCALAR_G: tl.constexpr, UNPACK: tl.constexpr,
              BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, GROUP_M: tl.constexpr):
    # Prefill: acc[M-tile, N-tile] = X . W_deq^T with the int4 unpack fused into the K loop (no dequantized
    # copy of W in HBM).  UNPACK 0: load [BLOCK_N, BLOCK_K / 8] words and split nibbles with a 3-D reshape;
    # UNPACK 1: load the word of every (n, k) (8x re-read, served by L1) and shift by 4 * (k % 8): no reshape.
    # SCALAR_G: BLOCK_K divides the group, so one scale (and zero) per row per K step.
    pid_m, pid_n = grouped_tile(tl.program_id(0), M, N, BLOCK_M, BLOCK_N, GROUP_M)
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    m_mask = offs_m < M
    n_mask = offs_n < N
    offs_k = tl.arange(0, BLOCK_K)
    BKW: tl.constexpr = BLOCK_K // 8
    acc = tl.zeros([BLOCK_M, BLOCK_N], dtype=tl.float32)
    for k0 in range(0, K, BLOCK_K):
        k = k0 + offs_k
        x = tl.load(x_ptr + offs_m[:, None] * stride_xm + k[None, :],
                    mask=m_mask[:, None] & (k < K)[None, :], other=0.0)
        if UNPACK == 0:
            wi = k0 // 8 + tl.arange(0, BKW)
            words = tl.load(w_ptr + offs_n[:, None] * KW + wi[None, :],
                            mask=n_mask[:, None] & (wi < KW)[None, :], other=0)
            sh = tl.arange(0, 8) * 4
            if HAS_ZERO:
                q = tl.reshape((words[:, :, None] >> sh[None, None, :]) & 15, [BLOCK_N, BLOCK_K])
            else:
                q = tl.reshape((words[:, :, None] << (28 - sh)[None, None, :]) >> 28, [BLOCK_N, BLOCK_K])
        else:
            wv = tl.load(w_ptr + offs_n[:, None] * KW + (k // 8)[None, :],
                         mask=n_mask[:, None] & (k < K)[None, :], other=0)
            if HAS_ZERO:
                q = (wv >> ((k % 8) * 4)[None, :]) & 15
            else:
                q = (wv << (28 - (k % 8) * 4)[None, :]) >> 28
        wq = q.to(tl.float32)
        if SCALAR_G:
            g = k0 // G
            s = tl.load(s_ptr + offs_n * NG + g, mask=n_mask, other=0.0).to(tl.float32)[:, None]
            if HAS_ZERO:
                wq = wq - tl.load(z_ptr + offs_n * NG + g, mask=n_mask, other=0.0).to(tl.float32)[:, None]
        else:
            gk = k // G
            gmask = n_mask[:, None] & (k < K)[None, :]
            s = tl.load(s_ptr + offs_n[:, None] * NG + gk[None, :], mask=gmask, other=0.0).to(tl.float32)
            if HAS_ZERO:
                wq = wq - tl.load(z_ptr + offs_n[:, None] * NG + gk[None, :], mask=gmask, other=0.0).to(tl.float32)
        w = (wq * s).to(x.dtype)
        acc = tl.dot(x, tl.trans(w), acc)
    if HAS_BIAS:
        acc += tl.load(b_ptr + offs_n, mask=n_mask, other=0.0).to(tl.float32)[None, :]
    tl.store(y_ptr + offs_m[:, None] * stride_ym + offs_n[None, :], acc.to(y_ptr.dtype.element_ty),
             mask=m_mask[:, None] & n_mask[None, :])


@triton.jit
def _int4_dequant(w_ptr, s_ptr, z_ptr, o_ptr, N, K, KW, NG, G,
                  HAS_ZERO: tl.constexpr, INT_OUT: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_KW: tl.constexpr):
    # one HBM pass: packed int4 [N, KW] -> dense [N, K] (float (q - z) * s, or the int8 values if INT_OUT)
    offs_n = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
    wi = tl.program_id(1) * BLOCK_KW + tl.arange(0, BLOCK_KW)
    offs_i = tl.arange(0, 8)
    wmask = (offs_n < N)[:, None] & (wi < KW)[None, :]
    words = tl.load(w_ptr + offs_n[:, None] * KW + wi[None, :], mask=wmask, other=0)
    if HAS_ZERO:
        q = (words[:, :, None] >> (offs_i * 4)[None, None, :]) & 15
    else:
        q = (words[:, :, None] << (28 - offs_i * 4)[None, None, :]) >> 28
    k = (wi * 8)[:, None] + offs_i[None, :]
    omask = (offs_n < N)[:, None, None] & (k < K)[None, :, :]
    optr = o_ptr + offs_n[:, None, None] * K + k[None, :, :]
    if INT_OUT:
        tl.store(optr, q.to(tl.int8), mask=omask)
    else:
        g = (wi * 8) // G
        smask = wmask & (g < NG)[None, :]
        s = tl.load(s_ptr + offs_n[:, None] * NG + g[None, :], mask=smask, other=0.0).to(tl.float32)
        wq = q.to(tl.float32)
        if HAS_ZERO:
            z = tl.load(z_ptr + offs_n[:, None] * NG + g[None, :], mask=smask, other=0.0).to(tl.float32)
            wq = wq - z[:, :, None]
        tl.store(optr, (wq * s[:, :, None]).to(o_ptr.dtype.element_ty), mask=omask)


@triton.jit
def _int4_dequant_flat(w_ptr, s_ptr, z_ptr, o_ptr, TOTAL_W, KW, NG, G,
                       HAS_ZERO: tl.constexpr, INT_OUT: tl.constexpr, BLOCK_W: tl.constexpr):
    # K % 8 == 0: packed words and the dense output are both one contiguous stream (word j -> out[8j:8j+8]),
    # so each program reads BLOCK_W consecutive words and writes 8 * BLOCK_W consecutive values (16-byte
    # stores for bf16): no row structure, every access contiguous.
    j = tl.program_id(0).to(tl.int64) * BLOCK_W + tl.arange(0, BLOCK_W)
    jm = j < TOTAL_W
    words = tl.load(w_ptr + j, mask=jm, other=0)
    offs_i = tl.arange(0, 8)
    if HAS_ZERO:
        q = (words[:, None] >> (offs_i * 4)[None, :]) & 15
    else:
        q = (words[:, None] << (28 - offs_i * 4)[None, :]) >> 28
    optr = o_ptr + (j * 8)[:, None] + offs_i[None, :]
    omask = jm[:, None]
    if INT_OUT:
        tl.store(optr, q.to(tl.int8), mask=omask)
    else:
        row = j // KW
        sidx = row * NG + ((j - row * KW) * 8) // G
        s = tl.load(s_ptr + sidx, mask=jm, other=0.0).to(tl.float32)
        wq = q.to(tl.float32)
        if HAS_ZERO:
            wq = wq - tl.load(z_ptr + sidx, mask=jm, other=0.0).to(tl.float32)[:, None]
        tl.store(optr, (wq * s[:, None]).to(o_ptr.dtype.element_ty), mask=omask)


@triton.jit
def _w4a16_tc(x_ptr, w_ptr, s_ptr, z_ptr, b_ptr, y_ptr, M, N, K, KW, NG, G, stride_xm, stride_ym,
              HAS_ZERO: tl.constexpr, HAS_BIAS: tl.constexpr,
              BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, GSUB: tl.constexpr):
    # GSUB = min(group, BLOCK_K): the tile holds BLOCK_K // GSUB whole groups (checked by the launcher)
    pid_n = tl.program_id(0)
    pid_m = tl.program_id(1)
    NSUB: tl.constexpr = BLOCK_K // GSUB
    BKW: tl.constexpr = BLOCK_K // 8
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    n_mask = offs_n < N
    m_mask = offs_m < M
    offs_kw = tl.arange(0, BKW)
    shifts = tl.arange(0, 8) * 4
    offs_k = tl.arange(0, BLOCK_K)
    offs_sub = tl.arange(0, NSUB)
    acc = tl.zeros([BLOCK_N, BLOCK_M], dtype=tl.float32)
    for k0 in range(0, K, BLOCK_K):
        wi = k0 // 8 + offs_kw
        words = tl.load(w_ptr + offs_n[:, None] * KW + wi[None, :],
                        mask=n_mask[:, None] & (wi < KW)[None, :], other=0)
        if HAS_ZERO:
            nib = (words[:, :, None] >> shifts[None, None, :]) & 15
        else:
            nib = (words[:, :, None] << (28 - shifts)[None, None, :]) >> 28  # sign-extend
        wq = tl.reshape(nib.to(tl.float32), [BLOCK_N, NSUB, GSUB])
        g = (k0 + offs_sub * GSUB) // G
        gmask = n_mask[:, None] & (g < NG)[None, :]
        s = tl.load(s_ptr + offs_n[:, None] * NG + g[None, :], mask=gmask, other=0.0).to(tl.float32)
        if HAS_ZERO:
            z = tl.load(z_ptr + offs_n[:, None] * NG + g[None, :], mask=gmask, other=0.0).to(tl.float32)
            wq = wq - z[:, :, None]
        w = tl.reshape(wq * s[:, :, None], [BLOCK_N, BLOCK_K])
        k = k0 + offs_k
        x = tl.load(x_ptr + offs_m[:, None] * stride_xm + k[None, :],
                    mask=m_mask[:, None] & (k < K)[None, :], other=0.0)
        acc = tl.dot(w.to(x.dtype), tl.trans(x), acc)
    if HAS_BIAS:
        acc += tl.load(b_ptr + offs_n, mask=n_mask, other=0.0).to(tl.float32)[:, None]
    y_ptrs = y_ptr + offs_m[None, :] * stride_ym + offs_n[:, None]
    tl.store(y_ptrs, acc.to(y_ptr.dtype.element_ty), mask=n_mask[:, None] & m_mask[None, :])


# M-bucket -> config; one config per launch (autotune with >= 2 configs breaks the interpreter).
GEMV_KIND = "gemv2"  # "gemv2" (rows x 16-byte words per thread), "gemv" (nibble slices) or "gemv3" (3-D)
# gemv.py's _w4a16_gemv4 (1.0-magic decode, x in registers, persistent rows) takes fp16/bf16 x with G % 32 == 0
# or per-channel for M <= GEMV4_MAX_M; other cases fall back to GEMV_KIND / tc.
GEMV4_MAX_M = 1
GEMV_CONFIG = dict(BLOCK_N=8, BLOCK_KW=128, num_warps=4, num_stages=1)
GEMV2_CONFIG = dict(BLOCK_N=4, BLOCK_KW=256, num_warps=2, num_stages=1)  # H100 sweep2 winner; BLOCK_KW = 128 * num_warps
GEMV3_CONFIG = dict(BLOCK_N=16, BLOCK_KW=64, num_warps=4, num_stages=1)
# From this M on: "mm" = the int4 unpack fused into the K loop of a tensor-core GEMM; "dequant" = dequantize
# the weight once per call (one HBM pass) and use cuBLAS.
PREFILL_KIND = "dequant"  # H100 sweep2: mm 830 us at best vs dequant + cuBLAS 553 us (M=2048)
DEQUANT_MIN_M = 512
DEQUANT_CONFIG = dict(BLOCK_N=32, BLOCK_KW=32, num_warps=4)  # 2-D kernel (K % 8 != 0)
DEQUANT_FLAT_CONFIG = dict(BLOCK_W=512, num_warps=4)  # flat kernel (K % 8 == 0)
MM_CONFIG = dict(BLOCK_M=128, BLOCK_N=128, BLOCK_K=64, GROUP_M=8, UNPACK=0, num_warps=4, num_stages=4)
TC_CONFIGS = [  # (max M, config)
    (16, dict(BLOCK_M=16, BLOCK_N=64, BLOCK_K=256, num_warps=4, num_stages=4)),
    (64, dict(BLOCK_M=64, BLOCK_N=64, BLOCK_K=128, num_warps=4, num_stages=4)),
    (1 << 62, dict(BLOCK_M=256, BLOCK_N=128, BLOCK_K=64, num_warps=8, num_stages=3)),
]


def supported_group(K: int, group_size: int) -> bool:
    G = norm_group(K, group_size)
    return G == K or (G % 16 == 0 and (G & (G - 1)) == 0) or G % 256 == 0


def _tc_config(M: int):
    for max_m, cfg in TC_CONFIGS:
        if M <= max_m:
            return cfg
    return TC_CONFIGS[-1][1]


def w4a16_linear_triton(x, qweight, scales, zeros, bias, group_size: int, config=None, kernel=None):
    check_w4a16(x, qweight, scales, zeros, bias, group_size, op="w4a16_linear_triton")
    torch._check_value(supported_group(x.shape[-1], group_size), lambda: (
        f"w4a16_linear_triton: group_size={group_size} at K={x.shape[-1]} is not supported by the kernels (they "
        f"take the whole row, a power of two >= 16 or a multiple of 256); use reference.w4a16_linear_ref"))
    K = x.shape[-1]
    x2 = x.reshape(-1, K)
    if x2.stride(-1) != 1:
        x2 = x2.contiguous()
    M = x2.shape[0]
    N = qweight.shape[0]
    words = as_words(qweight)
    KW = words.shape[1]
    G = norm_group(K, group_size)
    NG = scales.shape[1]
    y = torch.empty(M, N, dtype=x.dtype, device=x.device)
    dummy = scales
    z = zeros if zeros is not None else dummy
    b = bias if bias is not None else dummy
    if kernel is None:
        if M <= GEMV4_MAX_M and gemv4_supported(x2, K, group_size):
            kernel = "gemv4"
        elif M == 1:
            kernel = GEMV_KIND
        elif M >= DEQUANT_MIN_M and x.is_cuda:
            kernel = PREFILL_KIND
        else:
            kernel = "tc"
    if kernel == "dequant":
        w = dequantize_int4_triton(qweight, scales, zeros, group_size, K, x.dtype)
        return torch.nn.functional.linear(x, w, bias)
    if kernel == "gemv4":
        w4a16_gemv4(x2, qweight, scales, zeros, bias, group_size, y, config=config)
        return y.reshape(*x.shape[:-1], N)
    if kernel == "gemv2":
        cfg = dict(config or GEMV2_CONFIG)
        grid = (triton.cdiv(N, cfg["BLOCK_N"]), M)
        _w4a16_gemv2[grid](x2, words, scales, z, b, y, N, K, KW, NG, x2.stride(0), y.stride(0),
                           GW=0 if G >= K else G // 8, HAS_ZERO=zeros is not None, HAS_BIAS=bias is not None, **cfg)
    elif kernel == "mm":
        cfg = dict(config or MM_CONFIG)
        grid = (triton.cdiv(M, cfg["BLOCK_M"]) * triton.cdiv(N, cfg["BLOCK_N"]),)
        _w4a16_mm[grid](x2, words, scales, z, b, y, M, N, K, KW, NG, G, x2.stride(0), y.stride(0),
                        HAS_ZERO=zeros is not None, HAS_BIAS=bias is not None,
                        SCALAR_G=G >= K or G % cfg["BLOCK_K"] == 0, **cfg)
    elif kernel in ("gemv", "gemv3"):
        cfg = dict(config or (GEMV_CONFIG if kernel == "gemv" else GEMV3_CONFIG))
        grid = (triton.cdiv(N, cfg["BLOCK_N"]), M)
        (_w4a16_gemv if kernel == "gemv" else _w4a16_gemv3)[grid](x2, words, scales, z, b, y, N, K, KW, NG, G, x2.stride(0), y.stride(0),
                          HAS_ZERO=zeros is not None, HAS_BIAS=bias is not None, **cfg)
    else:
        cfg = dict(config or _tc_config(M))
        BK = cfg["BLOCK_K"]
        gsub = BK if G >= K else min(G, BK)
        assert BK % gsub == 0 and (G <= BK or G % BK == 0 or G >= K), (G, BK)
        grid = (triton.cdiv(N, cfg["BLOCK_N"]), triton.cdiv(M, cfg["BLOCK_M"]))
        _w4a16_tc[grid](x2, words, scales, z, b, y, M, N, K, KW, NG, G, x2.stride(0), y.stride(0),
                        HAS_ZERO=zeros is not None, HAS_BIAS=bias is not None, GSUB=gsub, **cfg)
    return y.reshape(*x.shape[:-1], N)


def dequantize_int4_triton(qweight, scales, zeros, group_size: int, K: int, dtype, int_out=False, config=None):
    """Packed int4 [N, KW*4 bytes] -> dense [N, K] (dtype, (q - z) * s) or int8 values if int_out."""
    words = as_words(qweight)
    N, KW = words.shape
    out = torch.empty(N, K, dtype=torch.int8 if int_out else dtype, device=qweight.device)
    s = scales if scales is not None else out
    z = zeros if zeros is not None else s
    G = norm_group(K, group_size)
    NG = scales.shape[1] if scales is not None else 1
    if K % 8 == 0 and (config is None or "BLOCK_W" in config):
        cfg = dict(config or DEQUANT_FLAT_CONFIG)
        grid = (triton.cdiv(N * KW, cfg["BLOCK_W"]),)
        _int4_dequant_flat[grid](words, s, z, out, N * KW, KW, NG, G, HAS_ZERO=zeros is not None,
                                 INT_OUT=int_out, **cfg)
        return out
    cfg = dict(config or DEQUANT_CONFIG)
    grid = (triton.cdiv(N, cfg["BLOCK_N"]), triton.cdiv(KW, cfg["BLOCK_KW"]))
    _int4_dequant[grid](words, s, z, out, N, K, KW, NG, G,
                        HAS_ZERO=zeros is not None, INT_OUT=int_out, **cfg)
    return out
