import torch

from qpass.calibrate import ChannelObserver


def test_streaming_statistics_equal_the_full_computation():
    torch.manual_seed(0)
    chunks = [torch.randn(3, 7, 5) * torch.arange(1, 6) for _ in range(4)]
    obs = ChannelObserver(5)
    for c in chunks:
        obs.update(c)
    full = torch.cat([c.reshape(-1, 5) for c in chunks])
    assert torch.equal(obs.absmax, full.abs().amax(0))
    assert torch.equal(obs.min, full.amin(0)) and torch.equal(obs.max, full.amax(0))
    assert obs.tokens == 84 and obs.nonfinite == 0


def test_non_finite_values_are_skipped_and_counted():
    obs = ChannelObserver(3)
    x = torch.tensor([[1.0, float("nan"), -2.0], [float("inf"), 0.5, 1.0]])
    obs.update(x)
    assert obs.nonfinite == 2
    assert obs.absmax.tolist() == [1.0, 0.5, 2.0]
    lo, hi = obs.range("minmax", symmetric=False)
    assert lo.tolist() == [1.0, 0.5, -2.0] and hi.tolist() == [1.0, 0.5, 1.0]


def test_channel_never_seen_finite_has_zero_range():
    obs = ChannelObserver(2)
    obs.update(torch.tensor([[float("nan"), 1.0]]))
    lo, hi = obs.range("minmax", symmetric=False)
    assert lo.tolist() == [0.0, 1.0] and hi.tolist() == [0.0, 1.0]
    assert obs.absmax.tolist() == [0.0, 1.0]


def test_percentile_is_below_absmax_and_ignores_outliers():
    torch.manual_seed(0)
    obs = ChannelObserver(2, percentile=99.0)
    for _ in range(3):
        x = torch.randn(1000, 2)
        x[0, 0] = 1000.0  # one outlier per batch
        obs.update(x)
    _, hi = obs.range("percentile", symmetric=True)
    assert obs.absmax[0] == 1000.0
    assert 2.0 < hi[0] < 3.5 and 2.0 < hi[1] < 3.5  # ≈ the 99th percentile of |N(0,1)| = 2.58


def test_sink_tokens_enter_the_hessian_down_weighted():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 10, 4, generator=g)
    x[:, 0] *= 100.0  # sinks
    plain = ChannelObserver(4, skip_tokens=1, hessian=True)
    weighted = ChannelObserver(4, skip_tokens=1, hessian=True, sink_weight=0.5)
    for o in (plain, weighted):
        o.update(x)
    rest, sink = x[:, 1:].reshape(-1, 4), x[:, 0]
    assert torch.allclose(plain.mean_hessian(), rest.T @ rest / 18, rtol=1e-5)
    want = (rest.T @ rest + 0.5 * sink.T @ sink) / (18 + 0.5 * 2)
    assert torch.allclose(weighted.mean_hessian(), want, rtol=1e-5)
    assert weighted.absmax.max() < 10  # the sinks still set no range


def test_sink_hessian_weight_is_validated():
    import pytest

    from qpass.recipe import CalibrationSpec, Recipe, RecipeError, WeightSpec

    with pytest.raises(RecipeError, match="calibration.sink_hessian_weight"):
        Recipe("g", weights=WeightSpec(4, 32, rounding="gptq"), calibration=CalibrationSpec(sink_hessian_weight=0.1))
    with pytest.raises(RecipeError, match="calibration.sink_hessian_weight"):
        Recipe("g", weights=WeightSpec(4, 32, rounding="gptq"),
               calibration=CalibrationSpec(skip_tokens=1, sink_hessian_weight=-1.0))
