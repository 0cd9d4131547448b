import math

import pytest
import torch

from qpass.tritplane import (CODES, TritPlanes, _assign, _canonical, bits_per_weight, decompose,
                             nearest_trits, reconstruct)


def _gauss(O=256, C=1024, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(O, C, generator=g)


@pytest.mark.parametrize("method", ["paper", "sorted"])
def test_gaussian_oracle(method):
    # algorithms.md §2: rel. Frobenius error ≈ 0.166 at G = 128, ≈ 38% zeros per plane, ≈ 15 iterations.
    tp = decompose(_gauss(), 128, method=method)
    s = tp.stats
    assert 0.155 < s["rel_fro_error"] < 0.172, s
    zeros = 0.5 * (s["zero_frac_t1"] + s["zero_frac_t2"])
    assert 0.33 < zeros < 0.46, s
    assert 0.30 < s["zero_frac_t2"] < 0.55 and 0.30 < s["zero_frac_t1"] < 0.55, s
    assert s["converged_frac"] > 0.99, s
    if method == "paper":
        assert 8 < s["iters_mean"] < 25, s  # ≈ 15
    if method == "sorted":  # multi-start finds better minima than the sign(w) start
        assert s["rel_fro_error"] < 0.164, s


def test_sorted_equals_paper_alternation():
    # Same start (sign), same maths: identical error (the sorted path is the exhaustive search, reorganized).
    W = _gauss(64, 384, seed=1)
    a = decompose(W, 64, method="paper", fp16_scales=False, tol=1e-12)
    b = decompose(W, 64, method="sorted", starts=("sign",), fp16_scales=False, tol=1e-12)
    assert abs(a.stats["rel_fro_error"] - b.stats["rel_fro_error"]) < 1e-9
    assert torch.allclose(a.alpha1, b.alpha1, rtol=1e-5) and torch.allclose(a.alpha2, b.alpha2, rtol=1e-5)


def test_threshold_assignment_equals_exhaustive_search_with_ties():
    g = torch.Generator().manual_seed(2)
    w = torch.randn(600, 32, generator=g, dtype=torch.float64)
    a1, a2 = _canonical(torch.rand(600, generator=g, dtype=torch.float64),
                        torch.rand(600, generator=g, dtype=torch.float64))
    a2[:100] = a1[:100]  # α1 = α2: α1−α2 = 0 ties with (0,0); (1,0) ties with (0,1)
    a2[100:200] = 0  # α2 = 0
    a2[200:300] = a1[200:300] / 2  # α1−α2 = α2
    a1[300:320] = 0
    a2[300:320] = 0  # all levels 0
    w[400:, :4] = a1[400:, None] / 2  # elements exactly on a midpoint (0 vs α1−α2 … whichever applies)
    c1, c2 = nearest_trits(w, a1, a2)
    d1, d2 = _assign(w, a1, a2)
    assert torch.equal(c1, d1) and torch.equal(c2, d2)


def test_deterministic_and_valid_trits():
    W = _gauss(96, 320, seed=3)
    for method in ("sorted", "paper"):
        a = decompose(W, 64, method=method)
        b = decompose(W, 64, method=method)
        for x, y in ((a.t1, b.t1), (a.t2, b.t2), (a.alpha1, b.alpha1), (a.alpha2, b.alpha2)):
            assert torch.equal(x, y)
        for t in (a.t1, a.t2):
            assert t.dtype == torch.int8 and set(t.unique().tolist()) <= {-1, 0, 1}
        assert (a.alpha1 >= a.alpha2).all() and (a.alpha2 >= 0).all()  # canonical scales
        assert torch.equal(a.alpha1, a.alpha1.half().float())  # fp16-representable


def test_partial_last_group():
    g = torch.Generator().manual_seed(4)
    W = torch.randn(40, 150, generator=g)  # G = 64: groups of 64, 64, 22
    tp = decompose(W, 64)
    assert tp.t1.shape == (40, 150) and tp.alpha1.shape == (40, 3)
    # the short group is solved on its own 22 columns: same result as decomposing them alone
    tail = decompose(W[:, 128:].contiguous(), 64)
    assert torch.equal(tp.t1[:, 128:], tail.t1) and torch.equal(tp.t2[:, 128:], tail.t2)
    assert torch.equal(tp.alpha1[:, 2], tail.alpha1[:, 0]) and torch.equal(tp.alpha2[:, 2], tail.alpha2[:, 0])
    assert tp.stats["rel_fro_error"] < 0.2
    p = decompose(W, 64, method="paper")
    assert p.t1.shape == (40, 150) and p.stats["rel_fro_error"] < 0.2


def test_hand_checkable():
    # one block whose magnitudes {0, 1, 3, 4, 5} are exactly the levels of (α1, α2) = (4, 1):
    # 0, α2, α1−α2, α1, α1+α2 — the only pair that fits exactly
    w = torch.tensor([[5.0, 4.0, -3.0, 1.0, 0.0, -4.0, 3.0, -1.0]])
    tp = decompose(w, 8)
    assert tp.alpha1.item() == pytest.approx(4.0) and tp.alpha2.item() == pytest.approx(1.0)
    assert tp.t1.tolist() == [[1, 1, -1, 0, 0, -1, 1, 0]]
    assert tp.t2.tolist() == [[1, 0, 1, 1, 0, 0, -1, -1]]
    # the paper's sign(w) start stops in a local minimum here, (3.125, 1.125), rel. error ≈ 0.099
    paper = decompose(w, 8, method="paper")
    assert paper.alpha1.item() == pytest.approx(3.125) and paper.stats["rel_fro_error"] > 0.09
    assert torch.equal(reconstruct(tp), w)
    # ties: α1 = α2 = 1 → 1 is (1,0) not (0,1); 0 is (0,0) not (1,-1)
    c1, c2 = nearest_trits(torch.tensor([[1.0, 0.0, -1.0, 2.0]]), torch.tensor([1.0]), torch.tensor([1.0]))
    assert c1.tolist() == [[1, 0, -1, 1]] and c2.tolist() == [[0, 0, 0, 1]]
    assert CODES[0] == (0, 0)


def test_zero_and_constant_blocks():
    W = torch.zeros(4, 64)
    W[1] = 0.5
    tp = decompose(W, 32)
    assert torch.equal(reconstruct(tp), W)
    assert (tp.t1[0] == 0).all() and (tp.t2[0] == 0).all()


def test_bits_per_weight():
    assert bits_per_weight(64) == pytest.approx(4.5)
    assert bits_per_weight(128, "base3") == pytest.approx(math.log2(9) + 0.25)
