import pytest
import torch

from qpass.kernels import formats as F


@pytest.mark.parametrize("K", [1, 7, 8, 9, 64, 172, 255])
@pytest.mark.parametrize("signed", [True, False])
def test_int4_roundtrip(K, signed):
    lo, hi = (-8, 8) if signed else (0, 16)
    q = torch.randint(lo, hi, (5, K), dtype=torch.int8)
    p = F.pack_int4(q)
    assert p.dtype == torch.uint8 and p.shape == (5, (K + 7) // 8 * 4)
    assert torch.equal(F.unpack_int4(p, K, signed=signed), q)
    assert F.as_words(p).shape == (5, (K + 7) // 8)


def test_int4_byte_layout():
    q = torch.tensor([[1, -2, 3, 7, -8, 0, 5, -1, 2]], dtype=torch.int8)
    p = F.pack_int4(q)
    assert p.tolist() == [[0xE1, 0x73, 0x08, 0xF5, 0x02, 0, 0, 0]]
    # nibble i of little-endian int32 word w holds k = 8w + i
    w = F.as_words(p)[0, 0].item() & 0xFFFFFFFF
    assert [(w >> (4 * i)) & 15 for i in range(8)] == [v & 15 for v in q[0, :8].tolist()]


@pytest.mark.parametrize("K", [1, 15, 16, 17, 100, 333])
def test_trits_roundtrip(K):
    t = torch.randint(-1, 2, (4, K), dtype=torch.int8)
    p = F.pack_trits(t)
    assert p.shape == (4, (K + 15) // 16 * 4)
    assert torch.equal(F.unpack_trits(p, K), t)
    b = F.pack_trits_base3(t)
    assert b.shape == (4, (K + 4) // 5) and int(b.max()) <= 242
    assert torch.equal(F.unpack_trits_base3(b, K), t)


def test_trit_byte_layout():
    t = torch.tensor([[1, 0, -1, 1, -1]], dtype=torch.int8)
    p = F.pack_trits(t)
    assert p[0, 0].item() == (2 | 1 << 2 | 0 << 4 | 2 << 6) and p[0, 1].item() == (0 | 1 << 2 | 1 << 4 | 1 << 6)
    assert F.pack_trits_base3(t)[0, 0].item() == 2 + 1 * 3 + 0 * 9 + 2 * 27 + 0 * 81


@pytest.mark.parametrize("G", [32, 64, 128, -1])
@pytest.mark.parametrize("sym", [True, False])
def test_quantize_int4_error(G, sym):
    w = torch.randn(16, 200)
    q, s, z = F.quantize_int4(w, G, sym)
    deq = F.dequantize_int4(q, s, z, G)
    assert s.shape == (16, F.num_groups(200, G))
    assert ((deq - w).norm() / w.norm()) < 0.2


def test_quantize_ternary_error():
    w = torch.randn(16, 200)
    t1, t2, a1, a2 = F.quantize_ternary(w, 64)
    assert set(t1.unique().tolist()) <= {-1, 0, 1}
    deq = F.dequantize_ternary(t1, t2, a1, a2, 64)
    assert ((deq - w).norm() / w.norm()) < 0.5
