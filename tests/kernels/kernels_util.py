"""Helpers shared by the kernel tests: error measure and random packed cases."""
import torch

from qpass.kernels import formats as F


def rel_err(a, b):
    a, b = a.float(), b.float()
    return ((a - b).norm() / b.norm().clamp_min(1e-30)).item()


def w4a16_case(M, N, K, G, sym, dtype, bias=True):
    """(x, packed int4 weight, scales, zeros or None, bias or None) of a random W4A16 linear."""
    w = torch.randn(N, K)
    q, s, z = F.quantize_int4(w, G, sym)
    p = F.pack_int4(q)
    x = torch.randn(M, K).to(dtype)
    b = torch.randn(N).to(dtype) if bias else None
    return x, p, s.to(dtype), (z.to(dtype) if z is not None else None), b


def ternary_case(M, N, K, G, dtype, bias=True):
    """(x, packed T1, packed T2, alpha1, alpha2, bias or None) of a random ternary linear."""
    t1, t2, a1, a2 = F.quantize_ternary(torch.randn(N, K), G)
    x = torch.randn(M, K).to(dtype)
    b = torch.randn(N).to(dtype) if bias else None
    return x, F.pack_trits(t1), F.pack_trits(t2), a1.to(dtype), a2.to(dtype), b
