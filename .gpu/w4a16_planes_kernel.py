"""Experiment: W4A16 tensor-core tile with the weight as wgmma's register operand and no shared-memory round trip
of the dequantized tile: each 128-wide K step's 16 words per row give 8 nibble planes ([BLOCK_N, 16] each, one
elementwise op chain from the load), each a K=16 dot against x pre-permuted so plane j's columns are contiguous."""
import torch
import triton
import triton.language as tl
from qpass.kernels.tiling import swap_ab_tile, tile_store, cdiv
from qpass.kernels.int4.unpack import half_of
from qpass.kernels.launch import launch


@triton.jit
def _w4a16_planes(x_ptr, w_ptr, s_ptr, z_ptr, b_ptr, y_ptr, M, N, K, KW, NG, G, K_SPLIT, stride_xm, stride_ym,
                  HAS_BIAS: tl.constexpr, ATOMIC: tl.constexpr, HAS_ZERO: tl.constexpr, BLOCK_M: tl.constexpr,
                  BLOCK_N: tl.constexpr, SCALE_W: tl.constexpr = False):
    offs_n, offs_m, n_mask, m_mask = swap_ab_tile(M, N, BLOCK_M, BLOCK_N)
    acc = tl.zeros([BLOCK_N, BLOCK_M], dtype=tl.float32)
    k_lo = tl.program_id(2) * K_SPLIT
    c = tl.arange(0, 16)
    DT: tl.constexpr = x_ptr.dtype.element_ty
    MAGIC: tl.constexpr = 0x43004300 if DT == tl.bfloat16 else 0x64006400
    BASE: tl.constexpr = 128.0 if DT == tl.bfloat16 else 1024.0
    off = tl.full([1, 1], BASE if HAS_ZERO else BASE + 8.0, DT)
    x_rows = x_ptr + offs_m[:, None] * stride_xm
    for k0 in range(k_lo, min(k_lo + K_SPLIT, K), 128):
        wi = k0 // 8 + c
        words = tl.load(w_ptr + offs_n[:, None] * KW + wi[None, :], mask=n_mask[:, None] & (wi < KW)[None, :], other=0)
        if not HAS_ZERO:
            words = words ^ -2004318072  # two's complement -> offset binary
        s = tl.load(s_ptr + offs_n * NG + k0 // G, mask=n_mask, other=0.0).to(tl.float32)
        if SCALE_W:  # the group scale on the weights, every dot chained on the loop-carried accumulator
            sd = s.to(DT)[:, None]
            for j in tl.static_range(4):
                p = ((words >> (4 * j)) & 0x000F000F) | MAGIC
                x_lo = tl.load(x_rows + (k0 + 16 * j + c)[None, :], mask=m_mask[:, None], other=0.0)
                x_hi = tl.load(x_rows + (k0 + 16 * (j + 4) + c)[None, :], mask=m_mask[:, None], other=0.0)
                acc = tl.dot((half_of(p, 0, DT) - off) * sd, tl.trans(x_lo), acc)
                acc = tl.dot((half_of(p, 16, DT) - off) * sd, tl.trans(x_hi), acc)
        else:
            part = tl.zeros([BLOCK_N, BLOCK_M], dtype=tl.float32)
            for j in tl.static_range(4):
                p = ((words >> (4 * j)) & 0x000F000F) | MAGIC
                x_lo = tl.load(x_rows + (k0 + 16 * j + c)[None, :], mask=m_mask[:, None], other=0.0)
                x_hi = tl.load(x_rows + (k0 + 16 * (j + 4) + c)[None, :], mask=m_mask[:, None], other=0.0)
                part = tl.dot(half_of(p, 0, DT) - off, tl.trans(x_lo), part)
                part = tl.dot(half_of(p, 16, DT) - off, tl.trans(x_hi), part)
            if HAS_ZERO:
                kk = k0 + tl.arange(0, 128)
                xs = tl.sum(tl.load(x_rows + kk[None, :], mask=m_mask[:, None], other=0.0).to(tl.float32), axis=1)
                z = tl.load(z_ptr + offs_n * NG + k0 // G, mask=n_mask, other=0.0).to(tl.float32)
                part -= z[:, None] * xs[None, :]
            acc += part * s[:, None]
    tile_store(acc, b_ptr, y_ptr, offs_n, offs_m, n_mask, m_mask, stride_ym, HAS_BIAS, ATOMIC, True)


def permute_x(x2):
    """x [M, K] -> [M, Kp] (Kp = K rounded up to 128, zero tail): in each 128-column block, column 16j + c holds
    x's column 8c + j (nibble j of word c)."""
    M, K = x2.shape
    Kp = cdiv(K, 128) * 128
    if Kp != K:
        x2 = torch.nn.functional.pad(x2, (0, Kp - K))
    return x2.view(M, Kp // 128, 16, 8).transpose(-1, -2).reshape(M, Kp)


def w4a16_planes(x2, words, scales, zeros, bias, G, cfg, xp=None):
    M, K = x2.shape
    N, KW = words.shape
    xp = permute_x(x2) if xp is None else xp
    assert not (cfg.get("SCALE_W") and zeros is not None)
    Kp = xp.shape[1]
    cfg = dict(cfg)
    split = cfg.pop("SPLIT_K", 1)
    k_split = cdiv(cdiv(Kp, split), 128) * 128
    split = cdiv(Kp, k_split)
    y = torch.empty(M, N, dtype=x2.dtype, device=x2.device)
    out = torch.zeros(M, N, dtype=torch.float32, device=x2.device) if split > 1 else y
    grid = (cdiv(N, cfg["BLOCK_N"]), cdiv(M, cfg["BLOCK_M"]), split)
    _w4a16_planes[grid](xp, words, scales, zeros if zeros is not None else scales, bias if bias is not None else scales,
                        out, M, N, Kp, KW, scales.shape[1], G, k_split, xp.stride(0), out.stride(0),
                        HAS_BIAS=bias is not None, ATOMIC=split > 1, HAS_ZERO=zeros is not None, **cfg)
    if split > 1:
        y.copy_(out + bias.float() if bias is not None else out)
    return y
