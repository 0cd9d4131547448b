"""SALE with the model's sliding window W (`model_window`; key j seen by query i iff i - W < j <= i, HF's
convention): the Triton kernels (interpreter, fp32 / fp16) vs the reference, τ = 0 vs SDPA with the window mask,
and no weight outside the window (poisoned keys)."""

import pytest
import torch
import torch.nn.functional as F

from qpass.kernels.sale import dispatch as K
from qpass.kernels.sale import ops as _sale_ops  # noqa: F401  (registers qpass::sale_*)
from qpass.kernels.sale import reference as R


def _qkv(H, Hkv, S, D, dtype, seed=0):
    """q/k with a shared direction and 'hot' key blocks (some far blocks are kept, others skipped)."""
    g = torch.Generator().manual_seed(seed)
    u = torch.randn(D, generator=g)
    u = u / u.norm() * (D / 64) ** 0.25
    q = torch.randn(1, H, S, D, generator=g) + 6 * u
    k = torch.randn(1, Hkv, S, D, generator=g)
    hot = torch.rand(S // 64 + 1, generator=g) < 0.3
    k = k + torch.where(hot.repeat_interleave(64)[:S], 4.0, -4.0)[:, None] * u
    v = torch.randn(1, Hkv, S, D, generator=g)
    return q.to(dtype), k.to(dtype), v.to(dtype)


def _window_mask(S, W):
    i = torch.arange(S)
    return (i[None] <= i[:, None]) & (i[:, None] - i[None] < W)


# (D, dtype, H, Hkv, S, W, bm, pool): S not a multiple of the block, W not a multiple of the block, W < a block,
# W ≥ S (= causal), one KV head, head dim 64 and 128, pooled estimates
CASES = [
    (64, torch.float32, 4, 2, 520, 200, 64, 1),
    (128, torch.float16, 2, 1, 450, 300, 64, 1),
    (64, torch.float32, 3, 1, 400, 37, 64, 1),
    (64, torch.float32, 2, 1, 300, 300, 64, 1),
    (64, torch.float32, 4, 2, 600, 333, 128, 8),
    (64, torch.float32, 2, 2, 500, 170, 64, 16),
]


@pytest.mark.parametrize("D,dtype,H,Hkv,S,W,bm,pool", CASES)
def test_windowed_select_matches_reference(D, dtype, H, Hkv, S, W, bm, pool):
    sc = D ** -0.5
    q, k, _ = _qkv(H, Hkv, S, D, dtype, seed=1)
    tau = torch.tensor([0.2, 0.05, 0.4, 1e-5][:H])
    scores = R.sale_block_scores_pooled_ref(q, k, sc, bm, 64, 64, 64, pool=pool, model_window=W) if pool > 1 \
        else R.sale_block_scores_ref(q, k, sc, bm, 64, 64, 64, model_window=W)
    ref = R.mask_from_scores(scores, tau)
    near = (scores - torch.log(tau).reshape(1, -1, 1, 1)).abs() < 1e-2  # estimate rounding at the threshold
    causal = R.block_layout(S, bm, 64, 0, 0, W)[2]
    if W < S:
        assert not ref[..., ~causal].any()  # nothing outside the window, the sink blocks included
    if W < S and W > 64 + bm:  # (a window within SALE's local band + a block keeps every block it holds)
        assert (ref[..., causal] == False).any()  # noqa: E712  some in-window block is skipped: not vacuous
    for impl in ("v1", "v2"):
        for split in ((False, True) if impl == "v2" else (None,)):
            idx, cnt, mask = K.sale_select_triton(q, k, tau, sc, bm, 64, 64, 64, group=False, pool=pool, impl=impl,
                                                  split=split, model_window=W)
            assert not mask.bool()[..., ~causal].any(), (impl, split)
            assert torch.equal(mask.bool() | near, ref | near), (impl, split)
            ridx, rcnt = R.mask_to_index(mask.bool())
            assert torch.equal(cnt, rcnt)
            for h in range(H):
                for b in range(rcnt.shape[2]):
                    assert torch.equal(idx[0, h, b, :rcnt[0, h, b]], ridx[0, h, b, :rcnt[0, h, b]])


def test_windowed_group_select_matches_per_head_union():
    """KV-group selection (stacked heads, v1 and v2 with the one-hot bias MMA) under a window: the union of the
    per-head maps."""
    q, k, _ = _qkv(4, 2, 470, 64, torch.float32, seed=4)
    tau = torch.tensor([0.2, 0.05, 0.4, 0.1])
    per_head = K.sale_select_triton(q, k, tau, 0.125, 64, 64, 64, 64, group=False, model_window=190)[2].bool()
    for impl, pool in (("v1", 1), ("v2", 8)):
        ph = K.sale_select_triton(q, k, tau, 0.125, 64, 64, 64, 64, group=False, pool=pool, impl=impl,
                                  model_window=190)[2].bool()
        got = K.sale_select_triton(q, k, tau, 0.125, 64, 64, 64, 64, group=True, pool=pool, impl=impl,
                                   bias_mma=True if impl == "v2" else None, model_window=190)[2].bool()
        assert torch.equal(got, R.group_union(ph, 2)), impl
    assert per_head.any()


@pytest.mark.parametrize("D,dtype,H,Hkv,S,W,bm,pool", CASES)
def test_windowed_attention_matches_reference(D, dtype, H, Hkv, S, W, bm, pool):
    sc = D ** -0.5
    q, k, v = _qkv(H, Hkv, S, D, dtype, seed=2)
    nqb, nkb, causal, always = R.block_layout(S, bm, 64, 64, 64, W)
    g = torch.Generator().manual_seed(3)
    mask = always | (causal & (torch.rand(1, H, nqb, nkb, generator=g) < 0.5))
    idx, cnt = R.mask_to_index(mask)
    ref = R.sale_attention_ref(q, k, v, mask, sc, bm, 64, model_window=W)
    tol = 1e-4 if dtype == torch.float32 else 2e-3
    for npi in (1, 2):
        got = K.sale_sparse_attention_triton(q, k, v, idx, cnt, sc, bm, 64, npi=npi, model_window=W)
        torch.testing.assert_close(got.float(), ref.float(), rtol=tol, atol=tol)


@pytest.mark.parametrize("D,dtype,Hkv,S,W,pool", [(64, torch.float32, 1, 333, 100, 1), (128, torch.float16, 2, 400, 150, 8),
                                                   (64, torch.float32, 1, 1, 100, 1)])
def test_tau0_windowed_equals_sdpa_with_the_window_and_ignores_poisoned_keys(D, dtype, Hkv, S, W, pool):
    """τ = 0 keeps every block inside the window: the kernels equal SDPA with the window mask; values of the keys
    outside every row's window are huge (1e4), so any weight there would show."""
    H = 4
    q, k, v = _qkv(H, Hkv, S, D, dtype, seed=5)
    ok = _window_mask(S, W)
    v_far = v.clone()
    v_far[:, :, : max(S - W, 0)] += 1e4  # outside the last rows' windows (earlier rows see some of them)
    want = F.scaled_dot_product_attention(q.float(), k.float(), v_far.float(), attn_mask=ok, enable_gqa=Hkv != H)
    got = K.sale_attention_triton(q, k, v_far, torch.zeros(H), D ** -0.5, 64, 64, 64, 64, group=False, pool=pool,
                                  model_window=W)
    tol = 2e-3 if dtype == torch.float32 else 2e-2
    torch.testing.assert_close(got.float() / 1e4, want / 1e4, rtol=tol, atol=tol / 1e2)
    if S > W:  # the last row's window excludes every shifted key
        assert got[..., -1, :].float().abs().max() < 100
    # the custom op (CPU: reference path) with the window: the same, with and without HF's window mask
    for mask in (None, ok[None, None]):
        op = torch.ops.qpass.sale_attention(q.float(), k.float(), v_far.float(), torch.zeros(H), None, 64, 64, 64, 64,
                                            0, False, pool, mask, W)
        torch.testing.assert_close(op / 1e4, want / 1e4, rtol=1e-4, atol=1e-6)


def test_window_at_least_seq_is_causal():
    q, k, v = _qkv(2, 1, 300, 64, torch.float32, seed=6)
    tau = torch.tensor([0.2, 0.05])
    full = K.sale_attention_triton(q, k, v, tau, None, 64, 64, 64, 64, group=False)
    for W in (300, 1000):
        torch.testing.assert_close(K.sale_attention_triton(q, k, v, tau, None, 64, 64, 64, 64, group=False,
                                                           model_window=W), full, rtol=0, atol=0)


def test_op_window_argument_checks_and_fake():
    q = torch.randn(1, 2, 100, 64)
    with pytest.raises(ValueError, match="model_window must be None"):
        torch.ops.qpass.sale_attention(q, q, q, torch.zeros(2), None, 64, 64, 64, 64, 0, False, 1, None, 0)
    # a mask that is not the given window's runs dense attention with that mask (not SALE over a wrong window)
    wrong = _window_mask(100, 30)[None, None]
    got = torch.ops.qpass.sale_attention(q, q, q, torch.full((2,), 0.5), None, 16, 16, 16, 16, 0, False, 1, wrong, 40)
    torch.testing.assert_close(got, F.scaled_dot_product_attention(q, q, q, attn_mask=wrong))
    with torch._subclasses.fake_tensor.FakeTensorMode():
        fq = torch.empty(1, 4, 300, 128)
        out = torch.ops.qpass.sale_attention(fq, fq[:, :2], fq[:, :2], torch.empty(4), None, 64, 64, 64, 64, 0,
                                             False, 1, None, 128)
        assert out.shape == fq.shape
        assert torch.ops.qpass.sale_select(fq, fq[:, :2], torch.empty(4), None, 64, 64, 64, 64, False, 1,
                                           128)[0].shape == (1, 4, 5, 5)
