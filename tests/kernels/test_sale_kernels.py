"""SALE kernels (interpreter) vs the pure-torch reference and the custom ops (their sm_90 compile check is tests/kernels/test_compile_sm90.py)."""

import pytest
import torch
import torch.nn.functional as F

from qpass.kernels.sale import dispatch as K
from qpass.kernels.sale import ops as _sale_ops  # noqa: F401  (registers qpass::sale_*)
from qpass.kernels.sale import reference as R


def _structured(B, H, Hkv, S, D, dtype, seed=0):
    """q/k with a shared direction: keys of 'hot' blocks align with it, the others point away, so the
    selection keeps some far blocks and skips others."""
    g = torch.Generator().manual_seed(seed)
    u = torch.randn(D, generator=g)
    u = u / u.norm() * (D / 64) ** 0.25
    q = torch.randn(B, H, S, D, generator=g) + 6 * u
    k = torch.randn(B, Hkv, S, D, generator=g)
    hot = torch.rand(S // 64 + 1, generator=g) < 0.3
    sign = torch.where(hot.repeat_interleave(64)[:S], 4.0, -4.0)
    k = k + sign[:, None] * u
    v = torch.randn(B, Hkv, S, D, generator=g)
    return q.to(dtype), k.to(dtype), v.to(dtype)


@pytest.mark.parametrize("D,dtype,G", [(64, torch.float32, 3), (128, torch.float16, 2)])
def test_quantize_matches_reference(D, dtype, G):
    q, k, _ = _structured(1, G, 1, 200, D, dtype)
    q = q.transpose(1, 2).contiguous().transpose(1, 2)  # [B, S, H, D] storage, like a projection's output
    ref = R.sale_quantize_ref(q, k)
    got = K.sale_quantize_triton(q, k)
    for name, a, b in zip(ref._fields, ref, got):
        a = a.reshape(b.shape)
        if a.dtype == torch.int8:
            assert (a != b).float().mean() < 1e-3, name  # rounding ties may differ in a rare element
        else:
            torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-3 * a.abs().max().item(), msg=name)


def test_pack_roundtrip_and_estimate_error():
    x = torch.randint(-7, 8, (3, 5, 64), dtype=torch.int8)
    assert torch.equal(R.unpack_int4_halves(R.pack_int4_halves(x)), x)
    q, k, _ = _structured(1, 2, 1, 256, 64, torch.float32)
    quant = R.sale_quantize_ref(q, k)
    est = R.sale_estimate_ref(quant, slice(0, 256), 256)
    exact = q @ k.transpose(-1, -2)
    # equal up to a per-row constant (q_i·k̄ is included, so exactly equal in expectation)
    err = (est - exact)
    assert err.abs().mean() / exact.abs().mean() < 0.1


@pytest.mark.parametrize("D,dtype,H,Hkv,group", [(64, torch.float32, 2, 1, False), (128, torch.float16, 2, 2, True),
                                                   (64, torch.float32, 4, 2, True), (64, torch.float32, 3, 1, True)])
def test_select_matches_reference(D, dtype, H, Hkv, group):
    S, sc = 448, D ** -0.5
    q, k, _ = _structured(1, H, Hkv, S, D, dtype, seed=1)
    tau = torch.tensor({2: [0.02, 1e-5], 3: [0.2, 0.4, 0.1], 4: [0.2, 0.4, 0.1, 1e-5]}[H])
    scores = R.sale_block_scores_ref(q, k, sc, 64, 64, 64, 64)
    ref = R.mask_from_scores(scores, tau)
    idx, cnt, m = K.sale_select_triton(q, k, tau, sc, 64, 64, 64, 64, group=group)
    near = (scores - torch.log(tau).reshape(1, -1, 1, 1)).abs() < 1e-2
    causal = R.block_layout(S, 64, 64, 0, 0)[2]
    assert ref[0, 0][causal].float().mean() < 0.95, "test data should skip some blocks"
    assert ref[0, 0].any(-1).all()
    if group:
        near, ref = R.group_union(near, Hkv), R.group_union(ref, Hkv)
        assert torch.equal(ref, R.sale_select_ref(q, k, tau, sc, 64, 64, 64, 64, group=True))
    assert torch.equal(m.bool() | near, ref | near)
    if H == 4:  # group 0 sparse, group 1 holds a dense head
        assert ref[0, 0][causal].float().mean() < 0.95 and torch.equal(m[0, 2].bool(), causal)
    elif H > 1 and Hkv == 1 and not group:
        assert torch.equal(m[0, 1].bool(), causal)  # the dense head keeps every causal block
    ridx, rcnt = R.mask_to_index(m)
    assert torch.equal(cnt, rcnt)
    for h in range(H):
        for b in range(cnt.shape[2]):
            n = cnt[0, h, b]
            assert torch.equal(idx[0, h, b, :n], ridx[0, h, b, :n])


@pytest.mark.parametrize("D,dtype,H,Hkv,S,pool,group", [
    (64, torch.float32, 4, 2, 424, 8, True),  # stacked heads (GS 2): 128 rows / 8 = 16 estimate rows
    (64, torch.float32, 3, 1, 451, 16, True),  # G 3 (per-head kernel, union in torch): 4 rows padded to 16
    (128, torch.float16, 2, 1, 300, 4, False),  # per head, S not a multiple of the block
])
def test_select_pooled_matches_reference(D, dtype, H, Hkv, S, pool, group):
    sc = D ** -0.5
    q, k, _ = _structured(1, H, Hkv, S, D, dtype, seed=1)  # S not a multiple of the pool / block
    tau = torch.tensor([0.2, 0.4, 0.1, 0.3][:H])
    scores = R.sale_block_scores_pooled_ref(q, k, sc, 64, 64, 64, 64, pool=pool)
    # the chunked reference (the CPU path of the ops and of calibration) gives the same scores
    chunked = R.sale_block_scores_ref(q, k, sc, 64, 64, 64, 64, chunk_rows=128, pool=pool)
    fin = torch.isfinite(scores)
    assert torch.equal(fin, torch.isfinite(chunked)) and torch.equal(scores[~fin], chunked[~fin])
    torch.testing.assert_close(chunked[fin], scores[fin], rtol=1e-5, atol=1e-4)
    ref = R.mask_from_scores(scores, tau)
    near = (scores - torch.log(tau).reshape(1, -1, 1, 1)).abs() < 1e-2
    if group:
        ref, near = R.group_union(ref, Hkv), R.group_union(near, Hkv)
    idx, cnt, m = K.sale_select_triton(q, k, tau, sc, 64, 64, 64, 64, group=group, pool=pool)
    assert torch.equal(m.bool() | near, ref | near)
    causal = R.block_layout(S, 64, 64, 0, 0)[2]
    assert ref[0, 0][causal].float().mean() < 0.97, "test data should skip some blocks"
    assert torch.equal(cnt, m.sum(-1).int())
    assert torch.equal(R.sale_select_ref(q, k, tau, sc, 64, 64, 64, 64, group=group, pool=pool), ref)


def test_pooled_chunked_attention_matches_reference():
    """The CPU evaluation path (`sale_attention_chunked_ref`, chunked, augmented product) with pool: same mask
    and output as select + attend."""
    q, k, v = _structured(1, 3, 1, 451, 64, torch.float32, seed=5)
    sc, tau = 0.125, torch.tensor([0.05, 0.0, 0.2])
    for pool in (4, 16):
        scores = R.sale_block_scores_pooled_ref(q, k, sc, 64, 64, 64, 64, pool=pool)
        ref = R.mask_from_scores(scores, tau)
        near = (scores - torch.log(tau).reshape(1, -1, 1, 1)).abs() < 1e-4
        out, m = R.sale_attention_chunked_ref(q, k, v, tau, sc, 64, 64, 64, 64, chunk_rows=128, pool=pool)
        assert torch.equal(m | near, ref | near)
        torch.testing.assert_close(out, R.sale_attention_ref(q, k, v, m, sc))
    with pytest.raises(ValueError, match="pool"):
        R.sale_block_scores_ref(q, k, sc, 64, 64, 64, 64, pool=3)


@pytest.mark.parametrize("D,dtype,H,Hkv,S", [(64, torch.float32, 4, 2, 320), (128, torch.float16, 2, 1, 256)])
def test_sparse_attention_matches_reference(D, dtype, H, Hkv, S):
    q, k, v = _structured(1, H, Hkv, S, D, dtype, seed=2)
    sc = D ** -0.5
    nqb, nkb, causal, _ = R.block_layout(S, 64, 64, 0, 0)
    g = torch.Generator().manual_seed(3)
    mask = causal & (torch.rand(1, H, nqb, nkb, generator=g) < 0.5)
    mask |= torch.eye(nqb, nkb, dtype=torch.bool)  # diagonal always kept
    idx, cnt = R.mask_to_index(mask)
    got = K.sale_sparse_attention_triton(q, k, v, idx, cnt, sc)
    ref = R.sale_attention_ref(q, k, v, mask, sc)
    tol = 1e-4 if dtype == torch.float32 else 2e-3
    torch.testing.assert_close(got.float(), ref.float(), rtol=tol, atol=tol)
    # every causal block kept == causal SDPA
    idx, cnt = R.mask_to_index(causal.expand(1, H, -1, -1))
    got = K.sale_sparse_attention_triton(q, k, v, idx, cnt, sc)
    dense = F.scaled_dot_product_attention(q.float(), k.float(), v.float(), is_causal=True, enable_gqa=True)
    torch.testing.assert_close(got.float(), dense, rtol=tol, atol=tol)


def test_ops_cpu():
    q, k, v = _structured(1, 3, 1, 256, 64, torch.float32, seed=4)
    tau = torch.full((3,), 0.01)
    short = torch.ops.qpass.sale_attention(q, k, v, tau, None, 64, 64, 64, 64, 1024)
    dense = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)
    torch.testing.assert_close(short, dense)
    out = torch.ops.qpass.sale_attention(q, k, v, tau, None, 64, 64, 64, 64, 128)
    mask = R.sale_select_ref(q, k, tau, 64 ** -0.5, 64, 64, 64, 64, group=True)
    torch.testing.assert_close(out, R.sale_attention_ref(q, k, v, mask, 64 ** -0.5))
    m1 = torch.ops.qpass.sale_select(q, k, tau, None, 64, 64, 64, 64, False)[2]
    assert torch.equal(m1.bool(), R.sale_select_ref(q, k, tau, 64 ** -0.5, 64, 64, 64, 64))
    idx, cnt, m = torch.ops.qpass.sale_select(q, k, tau, None, 64, 64, 64, 64)
    assert torch.equal(m.bool(), mask) and torch.equal(cnt, mask.sum(-1).int())
    pooled = torch.ops.qpass.sale_attention(q, k, v, tau, None, 64, 64, 64, 64, 128, True, 8)
    pmask = R.sale_select_ref(q, k, tau, 64 ** -0.5, 64, 64, 64, 64, group=True, pool=8)
    torch.testing.assert_close(pooled, R.sale_attention_ref(q, k, v, pmask, 64 ** -0.5))
    assert torch.equal(torch.ops.qpass.sale_select(q, k, tau, None, 64, 64, 64, 64, True, 8)[2].bool(), pmask)
    with torch._subclasses.fake_tensor.FakeTensorMode():
        fq, fk = torch.empty(1, 4, 300, 128), torch.empty(1, 2, 300, 128)
        assert torch.ops.qpass.sale_attention(fq, fk, fk, torch.empty(4), None, 64, 64, 64, 64, 0).shape == fq.shape
        assert torch.ops.qpass.sale_select(fq, fk, torch.empty(4), None, 64, 64, 64, 64)[0].shape == (1, 4, 5, 5)


# ---- v2 kernels (`_sale_select2_kernel`, `_sale_attn2_kernel`): same decisions / outputs as v1 and the reference
@pytest.mark.parametrize("D,dtype,H,Hkv,S,pool,group,bm,qb,tau", [
    (64, torch.float32, 4, 2, 424, 8, True, 64, None, [0.2, 0.4, 0.1, 1e-5]),  # stacked GS 2, QB 4; a dense head
    (64, torch.float32, 3, 1, 451, 16, True, 64, 2, [0.2, 0.4, 0.1]),  # G 3 (per-head + union), padded rows
    (128, torch.float16, 2, 1, 300, 4, False, 64, None, [0.2, 0.3]),  # D 128 fp16, S not a multiple of the block
    (64, torch.float32, 4, 2, 600, 1, True, 128, 2, [0.2, 0.4, 0.1, 0.3]),  # full resolution, QB 2 (KB 1 path)
    (64, torch.float32, 2, 2, 100, 8, True, 128, None, [0.2, 0.3]),  # one short query block (M < BLOCK_M)
])
def test_select_v2_matches_v1_and_reference(D, dtype, H, Hkv, S, pool, group, bm, qb, tau):
    sc = D ** -0.5
    q, k, _ = _structured(1, H, Hkv, S, D, dtype, seed=1)
    tau = torch.tensor(tau)
    v1 = K.sale_select_triton(q, k, tau, sc, bm, 64, 64, 64, group=group, pool=pool, impl="v1")
    v2 = K.sale_select_triton(q, k, tau, sc, bm, 64, 64, 64, group=group, pool=pool, impl="v2", qb=qb)
    for a, b in zip(v1, v2):
        assert torch.equal(a, b)
    v2s = K.sale_select_triton(q, k, tau, sc, bm, 64, 64, 64, group=group, pool=pool, impl="v2", qb=qb, split=True)
    for a, b in zip(v1, v2s):  # the exact pass as its own kernel (`_sale_thr_kernel`)
        assert torch.equal(a, b)
    if group and H > Hkv and (H // Hkv) & (H // Hkv - 1) == 0:  # stacked heads: the one-hot MMA bias
        v2m = K.sale_select_triton(q, k, tau, sc, bm, 64, 64, 64, group=group, pool=pool, impl="v2", qb=qb,
                                   bias_mma=True)
        assert torch.equal(v2m[2], v1[2]) and torch.equal(v2m[1], v1[1])
    scores = R.sale_block_scores_pooled_ref(q, k, sc, bm, 64, 64, 64, pool=pool)
    ref = R.mask_from_scores(scores, tau)
    near = (scores - torch.log(tau).reshape(1, -1, 1, 1)).abs() < 1e-2
    if group:
        ref, near = R.group_union(ref, Hkv), R.group_union(near, Hkv)
    assert torch.equal(v2[2].bool() | near, ref | near)
    ridx, rcnt = R.mask_to_index(v2[2].bool())
    assert torch.equal(v2[1], rcnt)
    for h in range(H):
        for b in range(rcnt.shape[2]):
            assert torch.equal(v2[0][0, h, b, :rcnt[0, h, b]], ridx[0, h, b, :rcnt[0, h, b]])
    # a v1 quant tuple (no unpacked keys) is accepted too
    quant = K.sale_quantize_triton(q, k)
    v2b = K.sale_select_triton(q, k, tau, sc, bm, 64, 64, 64, quant=quant, group=group, pool=pool, impl="v2", qb=qb)
    assert torch.equal(v2b[2], v1[2])


def test_quantize_unpacked_keys():
    q, k, _ = _structured(1, 2, 1, 200, 64, torch.float32)
    quant = K.sale_quantize_triton(q, k, unpack=True)
    assert len(quant) == 7 and quant[6].shape == (1, 200, 64)
    assert torch.equal(quant[6], R.unpack_int4_halves(quant[3]))
    for a, b in zip(quant[:6], K.sale_quantize_triton(q, k)):
        assert torch.equal(a, b)


@pytest.mark.parametrize("D,dtype,H,Hkv,S,bm,bn", [(64, torch.float32, 4, 2, 320, 64, 64),
                                                  (128, torch.float16, 2, 1, 300, 128, 64),
                                                  (64, torch.float32, 2, 1, 200, 64, 128),
                                                  (64, torch.float32, 3, 1, 260, 32, 64)])
def test_sparse_attention_v2_matches_reference(D, dtype, H, Hkv, S, bm, bn):
    q, k, v = _structured(1, H, Hkv, S, D, dtype, seed=2)
    sc = D ** -0.5
    nqb, nkb, causal, always = R.block_layout(S, bm, bn, 64, 64)
    g = torch.Generator().manual_seed(3)
    mask = always | (causal & (torch.rand(1, H, nqb, nkb, generator=g) < 0.5))  # odd and even kept counts
    idx, cnt = R.mask_to_index(mask)
    ref = R.sale_attention_ref(q, k, v, mask, sc, bm, bn)
    tol = 1e-4 if dtype == torch.float32 else 2e-3
    for npi in (1, 2):
        got = K.sale_sparse_attention_triton(q, k, v, idx, cnt, sc, bm, bn, npi=npi)
        torch.testing.assert_close(got.float(), ref.float(), rtol=tol, atol=tol)
