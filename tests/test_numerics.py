import pytest
import torch

from qpass import numerics as N


def test_symmetric_per_channel_int4_hand_computed():
    w = torch.tensor([[1.0, -2.0, 0.5, 7.0], [0.3, -0.7, 0.0, 0.1]])
    qw = N.quantize_weight(w, bits=4, group_size=None)
    # row 0: scale = 7/7 = 1 -> codes are round(w) with half-to-even: 0.5 -> 0
    assert torch.equal(qw.qweight[0], torch.tensor([1, -2, 0, 7], dtype=torch.int8))
    assert torch.allclose(qw.scale[:, 0], torch.tensor([1.0, 0.1]))
    # row 1: scale = 0.7/7 = 0.1 -> 3, -7, 0, 1
    assert torch.equal(qw.qweight[1], torch.tensor([3, -7, 0, 1], dtype=torch.int8))
    assert torch.allclose(qw.dequantize()[1], torch.tensor([0.3, -0.7, 0.0, 0.1]))


def test_round_half_to_even_and_clamp_int8():
    x = torch.tensor([[127.0, 2.5, 3.5, -1.5, -127.0]])
    q = N.quantize(x, torch.tensor([[1.0]]), None, bits=8, group_size=None)
    assert q.tolist() == [[127, 2, 4, -2, -127]]
    # clamp at the negative end is -128 for codes beyond the range
    q = N.quantize(torch.tensor([[-300.0, 300.0]]), torch.tensor([[1.0]]), None, bits=8, group_size=None)
    assert q.tolist() == [[-128, 127]]


def test_groups_with_short_last_group():
    w = torch.tensor([[1.0, 2.0, 3.0, 4.0, 10.0]])  # group 2: [1,2] [3,4] [10]
    qw = N.quantize_weight(w, bits=8, group_size=2)
    assert qw.scale.shape == (1, 3)
    assert torch.allclose(qw.scale[0], torch.tensor([2 / 127, 4 / 127, 10 / 127]))
    # 1/(2/127) = 63.5 -> 64 (half to even); 3/(4/127) = 95.25 -> 95
    assert qw.qweight.tolist() == [[64, 127, 95, 127, 127]]
    assert torch.allclose(qw.dequantize(), w, atol=0.01)


def test_asymmetric_hand_computed():
    w = torch.tensor([[1.0, 3.0, 4.0]])  # range includes zero: [0, 4], scale = 4/15, zero = 0
    qw = N.quantize_weight(w, bits=4, group_size=None, symmetric=False)
    assert torch.allclose(qw.scale, torch.tensor([[4 / 15]]))
    assert qw.zero.tolist() == [[0.0]]
    assert qw.qweight.tolist() == [[4, 11, 15]]  # 3.75 -> 4, 11.25 -> 11, 15
    w = torch.tensor([[-1.0, 2.0]])  # scale = 3/15 = 0.2, zero = round(1/0.2) = 5
    qw = N.quantize_weight(w, bits=4, group_size=None, symmetric=False)
    assert qw.zero.tolist() == [[5.0]] and qw.qweight.tolist() == [[0, 15]]
    assert torch.allclose(qw.dequantize(), w)


def test_zero_range_groups_do_not_produce_nan():
    w = torch.zeros(3, 8)
    w[1] = 5.0  # constant, non-zero row
    for sym in (True, False):
        qw = N.quantize_weight(w, bits=4, group_size=4, symmetric=sym)
        out = qw.dequantize()
        assert torch.isfinite(out).all()
        assert torch.allclose(out, w)


def test_fake_quant_per_token_and_static_per_channel():
    x = torch.tensor([[0.1, -0.7, 0.35], [10.0, 5.0, -2.5]])
    out = N.fake_quant_per_token(x, bits=4)
    # row 0 scale 0.1: 1, -7, round(3.5)=4 -> 0.4; row 1 scale 10/7
    assert torch.allclose(out[0], torch.tensor([0.1, -0.7, 0.4]))
    s = 10 / 7
    assert torch.allclose(out[1], torch.tensor([7 * s, 4 * s, -2 * s]))  # 3.5 -> 4, -1.75 -> -2
    scale = torch.tensor([0.1, 0.1, 1.0])
    out = N.fake_quant_per_channel(x, scale, None, bits=4)
    assert torch.allclose(out, torch.tensor([[0.1, -0.7, 0.0], [0.7, 0.7, -2.0]]))


@pytest.mark.parametrize("bits", [8, 4])
def test_fake_quant_per_token_rounds_like_the_int_kernels_on_rounding_ties(bits):
    """The fake-quant op and the lowered quantizer (kernels/int8/reference.py, the kernels' oracle) give the same
    codes bit for bit, also for values within an ulp of a rounding tie x/s = k + 1/2: `max|x| / qmax` and `x / s`
    (the generic fake_quant) round some of those the other way, which made a lowered graph differ from its
    fake-quant graph by a whole activation step."""
    from qpass.kernels.int8.reference import quantize_activation_int8_ref

    qmax, g = 2 ** (bits - 1) - 1, torch.Generator().manual_seed(0)
    rows, cols = 64, 48
    a = torch.rand(rows, 1, generator=g) * 3 + 0.1  # each row's max |x|
    s = a * torch.tensor(1.0 / qmax, dtype=torch.float32)
    k = torch.randint(-qmax, qmax - 1, (rows, cols), generator=g).float()
    x = (k + 0.5) * s  # on a tie, give or take the rounding of this product
    nudge = torch.randint(-1, 2, (rows, cols), generator=g)  # and one ulp either side
    x = torch.where(nudge > 0, torch.nextafter(x, x + 1), torch.where(nudge < 0, torch.nextafter(x, x - 1), x))
    x[:, 0] = a[:, 0]
    codes, step = quantize_activation_int8_ref(x, None, qmax)
    want = codes.float() * step[:, None]
    assert torch.equal(N.fake_quant_per_token(x, bits), want)
    assert not torch.equal(N.fake_quant(x, bits, None), want)  # the ties really are ties for the generic path


@pytest.mark.parametrize("bits", [8, 4])
def test_fake_quant_per_token_clipped_matches_the_int_kernels(bits):
    """clip_ratio < 1: the same codes as the lowered quantizer's clipped dynamic step, the largest values saturate."""
    from qpass.kernels.int8.reference import quantize_activation_int8_ref

    qmax = 2 ** (bits - 1) - 1
    x = torch.randn(16, 40, generator=torch.Generator().manual_seed(1)) * 2
    codes, step = quantize_activation_int8_ref(x, None, qmax, clip=0.8)
    out = N.fake_quant_per_token(x, bits, clip_ratio=0.8)
    assert torch.equal(out, codes.float() * step[:, None])
    assert (out.abs().amax(-1) < x.abs().amax(-1)).all()  # the max saturates below max|x|
    assert not torch.equal(out, N.fake_quant_per_token(x, bits))


def test_int3_and_int2_ranges():
    assert N.qrange(3, True) == (-4, 3) and N.qrange(2, True) == (-2, 1) and N.qrange(4, False) == (0, 15)
    w = torch.tensor([[3.0, -3.0, 1.0, 0.4]])
    qw = N.quantize_weight(w, bits=3, group_size=None)
    assert qw.qweight.tolist() == [[3, -3, 1, 0]]


@pytest.mark.parametrize("symmetric", [True, False])
def test_integer_group_steps_are_small_multiples_of_a_row_step_and_cost_little(symmetric):
    """N.integer_group_steps: every group's step = row step x u, u an integer in [1, U]; (code - zero) * u
    fits int8; the weight error stays within 10 % of the float-step grid's on heavy-tailed rows."""
    g = torch.Generator().manual_seed(0)
    w = torch.randn(48, 320, generator=g) * torch.rand(48, 1, generator=g) * 3
    w[:, ::37] *= 6  # outlier columns: groups of very different ranges in one row
    base = N.quantize_weight(w, 4, 64, symmetric)
    q = N.quantize_weight(w, 4, 64, symmetric, integer_steps=True)
    U = N.integer_step_limit(4, symmetric)
    assert U == (16 if symmetric else 8)
    row = q.scale.amax(-1, keepdim=True) / U
    u = q.scale / row
    assert torch.allclose(u, u.round(), atol=1e-5) and u.min() >= 1 and u.max() <= U
    centred = q.qweight.float() - (0 if symmetric else N.expand_groups(q.zero, 64, 320))
    assert (centred * N.expand_groups(u.round(), 64, 320)).abs().max() <= 128
    err = lambda x: float((x.dequantize() - w).norm() / w.norm())  # noqa: E731
    assert err(q) <= 1.1 * err(base)
