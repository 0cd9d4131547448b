"""qpass::attention: the flash-decoding kernel (interpreter, TRITON_INTERPRET=1) vs SDPA, the op's dispatch and
its fake (the sm_90 compile check is tests/kernels/test_compile_sm90.py)."""

import pytest
import torch
import torch.nn.functional as F

from qpass.kernels.attention import decode as A
from qpass.kernels.attention import dense as ops  # the op's paths
from qpass.kernels.attention import ops as _attention_ops  # noqa: F401  (registers qpass::attention)

f32, f16 = torch.float32, torch.float16


def make_inputs(B, H, Hkv, D, L, dtype, strided=False, seed=0):
    g = torch.Generator().manual_seed(seed)
    if strided:  # q as a projection's [B, 1, H, D] seen as [B, H, 1, D]; k / v a prefix of a longer cache
        q = torch.randn(B, 1, H, D, generator=g).to(dtype).transpose(1, 2)
        k = torch.randn(B, L + 7, Hkv, D, generator=g).to(dtype).transpose(1, 2)[:, :, :L]
        v = torch.randn(B, Hkv, L + 3, D, generator=g).to(dtype)[:, :, 3:]
    else:
        q, k, v = (torch.randn(*s, generator=g).to(dtype) for s in ((B, H, 1, D), (B, Hkv, L, D), (B, Hkv, L, D)))
    return q, k, v


def make_mask(kind, B, H, L, dtype, seed=1):
    """none; bool [B,1,1,L] (padded prefix and unfilled cache tail masked); bool per head [B,H,1,L];
    float additive [B,1,1,L] with -inf entries."""
    g = torch.Generator().manual_seed(seed)
    if kind == "none":
        return None
    if kind == "bool":
        m = torch.ones(B, 1, 1, L, dtype=torch.bool)
        m[0, ..., : L // 3] = False  # left padding of sequence 0
        m[..., L - L // 10:] = False  # static-cache slots not written yet
        return m
    if kind == "head":
        return torch.rand(B, H, 1, L, generator=g) > 0.3
    m = torch.randn(B, 1, 1, L, generator=g)
    m[..., torch.rand(L, generator=g) < 0.3] = -float("inf")
    return m.to(dtype)


def sdpa_ref(q, k, v, mask, scale=None):
    m = mask if mask is None or mask.dtype == torch.bool else mask.float()
    return F.scaled_dot_product_attention(q.float(), k.float(), v.float(), m, scale=scale, enable_gqa=True)


def assert_close(out, ref, dtype):
    tol = 1e-5 if dtype == f32 else 2e-3
    assert not out.isnan().any()
    torch.testing.assert_close(out.float(), ref, rtol=tol, atol=tol)


CASES = [  # B, H, Hkv, D, L, mask, dtype, strided
    (1, 4, 4, 64, 1, "none", f32, False),
    (1, 4, 4, 64, 37, "bool", f16, False),
    (2, 4, 4, 128, 64, "float", f32, False),
    (2, 4, 4, 64, 300, "bool", f32, True),
    (1, 32, 8, 128, 300, "bool", f16, False),
    (2, 32, 8, 64, 37, "head", f32, False),
    (2, 32, 8, 64, 1, "head", f16, False),
    (1, 6, 2, 64, 300, "head", f16, False),
    (2, 6, 2, 128, 300, "float", f16, False),
    (2, 6, 2, 64, 1, "bool", f32, False),
    (1, 6, 2, 64, 64, "none", f32, True),
    (1, 4, 1, 64, 300, "none", f16, False),
    (2, 4, 1, 128, 64, "bool", f32, False),
    (1, 4, 1, 64, 37, "float", f16, True),
    (1, 4, 2, 16, 70, "bool", f16, False),  # smallest supported head dim (tl.dot K = 16)
    (2, 4, 2, 32, 37, "float", f32, False),
]


@pytest.mark.parametrize("B,H,Hkv,D,L,mask,dtype,strided", CASES)
def test_decode_matches_sdpa(B, H, Hkv, D, L, mask, dtype, strided):
    q, k, v = make_inputs(B, H, Hkv, D, L, dtype, strided)
    m = make_mask(mask, B, H, L, dtype)
    assert_close(A.decode_attention_triton(q, k, v, m, None), sdpa_ref(q, k, v, m), dtype)


@pytest.mark.parametrize("splits", [1, 2, 5])
def test_split_count_and_scale(splits):
    q, k, v = make_inputs(1, 8, 2, 64, 300, f32)
    m = make_mask("float", 1, 8, 300, f32)
    out = A.decode_attention_triton(q, k, v, m, 0.3, splits=splits)
    assert_close(out, sdpa_ref(q, k, v, m, scale=0.3), f32)


@pytest.mark.parametrize("kind", ["bool", "float"])
def test_fully_masked_block_is_skipped(kind):
    # NaN in the K/V of key block 0 (keys 0..63), which the mask hides from every head: a load would give NaN
    B, H, Hkv, D, L = 1, 6, 2, 64, 150
    q, k, v = make_inputs(B, H, Hkv, D, L, f32)
    m = torch.ones(B, 1, 1, L, dtype=torch.bool)
    m[..., :70] = False
    ref = sdpa_ref(q, k, v, m)
    k[:, :, :64], v[:, :, :64] = float("nan"), float("nan")
    if kind == "float":
        m = torch.zeros(B, 1, 1, L).masked_fill(~m, -float("inf"))
    assert_close(A.decode_attention_triton(q, k, v, m, None, splits=1), ref, f32)


def test_fully_masked_rows_give_zero_not_nan():
    # SDPA's math path (CPU) returns 0 for such rows too; its CUDA kernels are not checked here
    B, H, Hkv, D, L = 2, 4, 2, 64, 100
    q, k, v = make_inputs(B, H, Hkv, D, L, f32)
    m = torch.rand(B, H, 1, L) > 0.5
    m[0, 1], m[1, 3] = False, False
    out = A.decode_attention_triton(q, k, v, m, None)
    assert not out.isnan().any()
    assert out[0, 1].abs().max() == 0 and out[1, 3].abs().max() == 0
    keep = torch.ones(B, H, dtype=torch.bool)
    keep[0, 1], keep[1, 3] = False, False
    torch.testing.assert_close(out[keep], sdpa_ref(q, k, v, m)[keep], rtol=1e-5, atol=1e-5)
    fm = torch.full((B, 1, 1, L), -float("inf"))
    assert A.decode_attention_triton(q, k, v, fm, None).abs().max() == 0


def test_supported():
    q, k, v = make_inputs(2, 8, 2, 64, 40, f16)
    m = make_mask("bool", 2, 8, 40, f16)
    assert A.supported(q, k, v, m, False, True)
    assert A.supported(q, k, v, make_mask("float", 2, 8, 40, f16), False, True)
    assert A.supported(q, k, v, m[0], False, True)  # [1, 1, L] broadcasts
    assert not A.supported(q, k, v, m, False, False)  # Hkv != H without enable_gqa: SDPA raises
    assert not A.supported(q, k, v, None, True, True)  # causal at S = 1 with L > 1 hides keys 1..
    assert not A.supported(q, k, v, m.expand(2, 1, 2, 40), False, True)  # a mask for 2 query rows
    assert not A.supported(q, k, v, make_mask("float", 2, 8, 40, f32), False, True)  # mask dtype != q dtype
    assert not A.supported(q.float(), k.float(), v.float(), m, False, True)  # fp32: SDPA
    assert not A.supported(q, k[..., :48], v[..., :48], m, False, True)  # D not a power of two
    assert not A.supported(q, k, v.transpose(-1, -2).contiguous().transpose(-1, -2), m, False, True)
    qm = torch.empty(1, 2, 1, 64, dtype=f16, device="meta")
    big = torch.empty(1, 2, 2 ** 20, 64, dtype=f16, device="meta").as_strided((1, 2, 2 ** 20, 64),
                                                                               (2 ** 32, 2 ** 31, 64, 1))
    assert A.supported(qm, big[:, :1], big[:, :1], None, False, True)
    assert not A.supported(qm, big, big, None, False, True)  # int32 offsets would overflow
    q1, k1, v1 = make_inputs(1, 4, 4, 64, 1, f16)
    assert A.supported(q1, k1, v1, None, True, False)  # causal with one key = no mask


def test_choose_path_and_run_path(monkeypatch):
    # what the op runs on CUDA, exercised on CPU tensors (the decode path through the interpreter)
    q, k, v = make_inputs(1, 6, 2, 64, 300, f16)
    m = make_mask("bool", 1, 6, 300, f16)
    assert ops.choose_path(q, k, v, m, False, True) == "decode"
    # no mask: SDPA's flash kernel outside CUDA-graph capture (host-bound there), the Triton kernel inside it
    assert ops.choose_path(q, k, v, None, False, True) == "sdpa"
    monkeypatch.setattr(ops, "_capturing", lambda q: True)
    assert ops.choose_path(q, k, v, None, False, True) == "decode"
    long_k, long_v = (t.expand(1, 2, ops.DECODE_MAX_KEYS + 1, 64) for t in (k[:, :, :1], v[:, :, :1]))
    assert ops.choose_path(q, long_k, long_v, None, False, True) == "sdpa"  # long caches: SDPA is faster
    monkeypatch.undo()
    out = ops.run_path("decode", q, k, v, m, False, None, True)
    assert_close(out, sdpa_ref(q, k, v, m), f16)
    S = 33
    q, k, v = (torch.randn(2, 4, S, 64) for _ in range(3))
    causal = torch.ones(S, S, dtype=torch.bool).tril().expand(2, 1, S, S)
    assert ops.choose_path(q, k, v, causal, False, False) == "causal"
    ref = F.scaled_dot_product_attention(q, k, v, causal)
    torch.testing.assert_close(ops.run_path("causal", q, k, v, causal, False, None, False), ref)
    padded = causal.clone()
    padded[0, :, :, 0] = False
    assert ops.choose_path(q, k, v, padded, False, False) == "sdpa"
    assert ops.choose_path(q, k[:, :, :-1], v[:, :, :-1], causal[..., :-1], False, False) == "sdpa"  # S != L
    assert ops.choose_path(q.float()[:, :, :1], k, v, None, False, False) == "sdpa"


def test_masked_gqa_sdpa_repeats_kv(monkeypatch):
    """A mask and grouped K/V together: the SDPA path repeats K/V to the query heads and calls SDPA without
    enable_gqa (PyTorch's fused CUDA kernels take one or the other; both would run its math backend)."""
    q, k, v = torch.randn(1, 6, 5, 32), torch.randn(1, 2, 9, 32), torch.randn(1, 2, 9, 32)
    m = torch.rand(1, 1, 5, 9) > 0.3
    ref = F.scaled_dot_product_attention(q, k, v, m, enable_gqa=True)
    calls = []
    sdpa = F.scaled_dot_product_attention

    def spy(q_, k_, v_, *args, **kwargs):
        calls.append((k_.shape[1], kwargs.get("enable_gqa")))
        return sdpa(q_, k_, v_, *args, **kwargs)

    monkeypatch.setattr(ops.F, "scaled_dot_product_attention", spy)
    torch.testing.assert_close(ops.run_path("sdpa", q, k, v, m, False, None, True), ref)
    ops.run_path("sdpa", q, k, v, None, True, None, True)  # no mask: grouped K/V stay grouped
    assert calls == [(6, False), (2, True)]


@pytest.mark.parametrize("S,L,mask,is_causal,scale", [(1, 37, "bool", False, None), (5, 5, "causal", False, 0.2),
                                                      (4, 9, "float", False, None), (6, 6, "none", True, None)])
def test_op_on_cpu_is_sdpa(S, L, mask, is_causal, scale):
    g = torch.Generator().manual_seed(0)
    q = torch.randn(2, 8, S, 64, generator=g)
    k, v = torch.randn(2, 2, L, 64, generator=g), torch.randn(2, 2, L, 64, generator=g)
    m = {"bool": torch.rand(2, 1, S, L, generator=g) > 0.3, "float": torch.randn(2, 1, S, L, generator=g),
         "causal": torch.ones(S, L, dtype=torch.bool).tril(), "none": None}[mask]
    out = torch.ops.qpass.attention(q, k, v, m, is_causal, scale, True)
    ref = F.scaled_dot_product_attention(q, k, v, m, 0.0, is_causal, scale=scale, enable_gqa=True)
    torch.testing.assert_close(out, ref, rtol=0, atol=0)
    # [B, H, S, D] in [B, S, H, D] memory, the fake's strides: the model's transpose(1, 2) after it is contiguous
    assert out.stride() == torch.empty(2, S, 8, 64).transpose(1, 2).stride() and out.transpose(1, 2).is_contiguous()


def test_fake_and_opcheck():
    from torch._subclasses.fake_tensor import FakeTensorMode
    with FakeTensorMode():
        q, k, v = torch.empty(2, 32, 1, 128, dtype=f16), torch.empty(2, 8, 77, 128, dtype=f16), torch.empty(
            2, 8, 77, 96, dtype=f16)
        out = torch.ops.qpass.attention(q, k, v, torch.empty(2, 1, 1, 77, dtype=torch.bool), False, None, True)
        assert out.shape == (2, 32, 1, 96) and out.dtype == f16
    q, k, v = make_inputs(1, 4, 2, 64, 20, f32)
    torch.library.opcheck(torch.ops.qpass.attention.default, (q, k, v, make_mask("bool", 1, 4, 20, f32), False,
                                                              None, True))


def test_causal_check_is_remembered_per_mask_until_it_changes(monkeypatch):
    """A model passes one mask to every layer: the causal check reads it (a device sync) once — also when each
    layer gets its own tensor over the mask's storage, as under inductor — and reads it again when it is another
    tensor, another view of it, or was written in place."""
    reads = []
    real_all = torch.Tensor.all

    def counting_all(t, *a, **kw):
        reads.append(t.shape)
        return real_all(t, *a, **kw)

    monkeypatch.setattr(torch.Tensor, "all", counting_all)
    S = 7
    mask = torch.ones(S, S, dtype=torch.bool).tril().expand(1, 1, S, S)
    assert all(ops.is_causal_mask(mask, S) for _ in range(5)) and len(reads) == 1
    again = torch.ones(S, S, dtype=torch.bool).tril().expand(1, 1, S, S)  # equal values, another tensor
    assert ops.is_causal_mask(again, S) and len(reads) == 2
    base = again._base
    base[S - 1, 0] = False  # written in place through its base: the view's answer changes
    assert not ops.is_causal_mask(again, S) and len(reads) == 3
    assert not ops.is_causal_mask(again, S) and len(reads) == 3
    assert ops.is_causal_mask(again[..., :S - 1, :S - 1], S - 1) and len(reads) == 4  # another view: read
    # inductor passes each layer a fresh tensor over the one mask buffer (no `_base`): the storage is the key
    buffer = torch.ones(S, S, dtype=torch.bool).tril()
    fresh = [torch.empty(0, dtype=torch.bool).set_(buffer.untyped_storage(), 0, (1, 1, S, S), (S * S, S * S, S, 1))
             for _ in range(3)]
    assert all(f._base is None for f in fresh)
    n = len(reads)
    assert all(ops.is_causal_mask(f, S) for f in fresh) and len(reads) == n + 1
    del buffer, fresh  # the storage freed: a new buffer (maybe at the same address) is read again
    other = torch.zeros(S, S, dtype=torch.bool)
    alias = torch.empty(0, dtype=torch.bool).set_(other.untyped_storage(), 0, (1, 1, S, S), (S * S, S * S, S, 1))
    assert not ops.is_causal_mask(alias, S) and len(reads) == n + 2
    full = torch.ones(S, S, dtype=torch.bool).tril()  # layers alternating a full and a sliding-window mask
    window = full & ~torch.ones(S, S, dtype=torch.bool).tril(-3)
    answers = [ops.is_causal_mask(m, S) for _ in range(4) for m in (full, window)]
    assert answers == [True, False] * 4 and len(reads) == n + 4
    with torch.inference_mode():
        inf = torch.ones(S, S, dtype=torch.bool).tril()
    n = len(reads)
    assert ops.is_causal_mask(inf, S) and ops.is_causal_mask(inf, S) and len(reads) == n + 2  # no version counter
