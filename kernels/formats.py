"""Packed low-bit weight formats (byte layouts are specified in docs/formats.md).

int4:   two values per byte along K, element 2j in the low nibble, 2j+1 in the high nibble; each row is padded
        with zero nibbles to a multiple of 8 values so that a row is a whole number of little-endian int32
        words (nibble i of word w holds k = 8w + i).  Signed values [-8, 7] are stored as two's complement
        nibbles; asymmetric values [0, 15] as plain nibbles (the kernels are told which by the zero points).
trits:  2 bits per trit along K, code = t + 1 in {0, 1, 2}, trit j of a byte at bits 2j..2j+1; rows padded
        with t = 0 to a multiple of 16 trits (nibble-free int32 words: trit i of word w holds k = 16w + i).
base-3: 5 trits per byte, byte = sum_j (t_j + 1) * 3**j (values 0..242); storage only, no kernel reads it.
"""
from __future__ import annotations

import torch

INT4_ALIGN = 8  # values per int32 word
TRIT_ALIGN = 16


def _ceil_to(x: int, m: int) -> int:
    return (x + m - 1) // m * m


def num_groups(K: int, group_size: int) -> int:
    """Groups along K; group_size <= 0 or >= K means one group per row (per-channel)."""
    if group_size <= 0 or group_size >= K:
        return 1
    return (K + group_size - 1) // group_size


def norm_group(K: int, group_size: int) -> int:
    return K if group_size <= 0 or group_size >= K else group_size


# ---------------------------------------------------------------- int4
def pack_int4(q: torch.Tensor) -> torch.Tensor:
    """q: integer tensor [N, K] with values in [-8, 7] or [0, 15] -> uint8 [N, ceil(K/8)*4]."""
    assert q.dim() == 2
    N, K = q.shape
    Kp = _ceil_to(K, INT4_ALIGN)
    qi = torch.zeros(N, Kp, dtype=torch.int32, device=q.device)
    qi[:, :K] = q.to(torch.int32)
    if K:
        assert int(qi.min()) >= -8 and int(qi.max()) <= 15, "int4 values must lie in [-8, 15]"
    nib = qi & 0xF
    return (nib[:, 0::2] | (nib[:, 1::2] << 4)).to(torch.uint8)


def unpack_int4(p: torch.Tensor, K: int, signed: bool = True) -> torch.Tensor:
    """uint8 [N, >= ceil(K/2)] -> int8 [N, K] (two's complement nibbles if signed, else [0, 15])."""
    b = p.to(torch.int32)
    lo, hi = b & 0xF, (b >> 4) & 0xF
    q = torch.stack([lo, hi], dim=-1).reshape(p.shape[0], -1)[:, :K]
    if signed:
        q = q - ((q >> 3) << 4)  # 8..15 -> -8..-1
    return q.to(torch.int8)


def as_words(p: torch.Tensor) -> torch.Tensor:
    """View a packed uint8 [N, 4*W] tensor as the int32 [N, W] words the kernels load (no copy)."""
    assert_words(p)
    return p.view(torch.int32)


def assert_words(p: torch.Tensor) -> None:
    """`p` is a packed uint8 [N, 4*W] tensor a kernel may read as int32 words (its rows contiguous)."""
    assert p.dtype == torch.uint8 and p.shape[-1] % 4 == 0 and p.is_contiguous()


def quantize_int4(w: torch.Tensor, group_size: int = 128, symmetric: bool = True):
    """Round-to-nearest int4 quantization of a float weight [N, K] (for tests and benchmarks).

    Returns (q int8 [N, K], scales fp32 [N, G], zeros fp32 [N, G] or None) with w ~ (q - z) * s.
    """
    N, K = w.shape
    G = norm_group(K, group_size)
    ng = num_groups(K, group_size)
    wf = torch.zeros(N, ng * G, dtype=torch.float32, device=w.device)
    wf[:, :K] = w.float()
    wg = wf.view(N, ng, G)
    valid = (torch.arange(ng * G, device=w.device) < K).view(1, ng, G)
    if symmetric:
        amax = wg.abs().amax(-1).clamp_min(1e-8)
        s = amax / 7.0
        q = torch.clamp(torch.round(wg / s[..., None]), -8, 7)
        z = None
    else:
        big = torch.finfo(torch.float32).max
        lo = torch.where(valid, wg, torch.full_like(wg, big)).amin(-1)
        hi = torch.where(valid, wg, torch.full_like(wg, -big)).amax(-1)
        s = ((hi - lo) / 15.0).clamp_min(1e-8)
        z = torch.clamp(torch.round(-lo / s), 0, 15)
        q = torch.clamp(torch.round(wg / s[..., None]) + z[..., None], 0, 15)
    return q.reshape(N, -1)[:, :K].to(torch.int8), s, z


def dequantize_int4(q: torch.Tensor, scales: torch.Tensor, zeros: torch.Tensor | None, group_size: int):
    """(q - z) * s expanded along K, fp32 [N, K]."""
    N, K = q.shape
    G = norm_group(K, group_size)
    idx = torch.arange(K, device=q.device) // G
    s = scales.float()[:, idx]
    qf = q.float()
    if zeros is not None:
        qf = qf - zeros.float()[:, idx]
    return qf * s


# ---------------------------------------------------------------- trits
def pack_trits(t: torch.Tensor) -> torch.Tensor:
    """t: integer tensor [N, K] in {-1, 0, 1} -> uint8 [N, ceil(K/16)*4], 4 trits per byte (code t + 1)."""
    assert t.dim() == 2
    N, K = t.shape
    Kp = _ceil_to(K, TRIT_ALIGN)
    c = torch.ones(N, Kp, dtype=torch.int32, device=t.device)  # padding is t = 0
    c[:, :K] = t.to(torch.int32) + 1
    if K:
        assert int(c.min()) >= 0 and int(c.max()) <= 2, "trits must lie in {-1, 0, 1}"
    c = c.view(N, Kp // 4, 4)
    return (c[..., 0] | (c[..., 1] << 2) | (c[..., 2] << 4) | (c[..., 3] << 6)).to(torch.uint8)


def unpack_trits(p: torch.Tensor, K: int) -> torch.Tensor:
    b = p.to(torch.int32)
    c = torch.stack([(b >> (2 * j)) & 3 for j in range(4)], dim=-1).reshape(p.shape[0], -1)[:, :K]
    return (c - 1).to(torch.int8)


def pack_trits_base3(t: torch.Tensor) -> torch.Tensor:
    """t [N, K] in {-1, 0, 1} -> uint8 [N, ceil(K/5)], byte = sum_j (t_j + 1) * 3**j (1.6 bits per trit)."""
    N, K = t.shape
    Kp = _ceil_to(K, 5)
    c = torch.ones(N, Kp, dtype=torch.int32, device=t.device)
    c[:, :K] = t.to(torch.int32) + 1
    c = c.view(N, Kp // 5, 5)
    w = torch.tensor([1, 3, 9, 27, 81], dtype=torch.int32, device=t.device)
    return (c * w).sum(-1).to(torch.uint8)


def unpack_trits_base3(p: torch.Tensor, K: int) -> torch.Tensor:
    b = p.to(torch.int32)
    digits = []
    for _ in range(5):
        digits.append(b % 3)
        b = b // 3
    c = torch.stack(digits, dim=-1).reshape(p.shape[0], -1)[:, :K]
    return (c - 1).to(torch.int8)


def quantize_ternary(w: torch.Tensor, group_size: int = 128):
    """Greedy two-plane ternary fit W ~ a1*T1 + a2*T2 per (row, group) (for tests and benchmarks).

    Returns (t1, t2 int8 [N, K], a1, a2 fp32 [N, G])."""
    N, K = w.shape
    G = norm_group(K, group_size)
    ng = num_groups(K, group_size)
    wf = torch.zeros(N, ng * G, dtype=torch.float32, device=w.device)
    wf[:, :K] = w.float()
    wg = wf.view(N, ng, G)
    planes, alphas, r = [], [], wg
    for _ in range(2):
        thr = 0.7 * r.abs().mean(-1, keepdim=True)
        t = torch.where(r.abs() > thr, torch.sign(r), torch.zeros_like(r))
        a = (r.abs() * t.abs()).sum(-1) / t.abs().sum(-1).clamp_min(1.0)
        planes.append(t)
        alphas.append(a)
        r = r - a[..., None] * t
    t1, t2 = (p.reshape(N, -1)[:, :K].to(torch.int8) for p in planes)
    return t1, t2, alphas[0], alphas[1]


def dequantize_ternary(t1, t2, a1, a2, group_size: int):
    N, K = t1.shape
    G = norm_group(K, group_size)
    idx = torch.arange(K, device=t1.device) // G
    return t1.float() * a1.float()[:, idx] + t2.float() * a2.float()[:, idx]


def finish_linear(y: torch.Tensor, bias, out_dtype, lead_shape) -> torch.Tensor:
    """The pure-torch references' last step: y [rows, N] fp32 (+ bias), cast to out_dtype, leading dims back."""
    if bias is not None:
        y = y + bias.float()
    return y.to(out_dtype).reshape(*lead_shape, y.shape[-1])
