import math

import pytest
import torch

import qpass


class Uniform(torch.nn.Module):
    """Predicts every token with a fixed distribution; records which windows it saw."""

    def __init__(self, vocab=10, favourite=None):
        super().__init__()
        self.vocab, self.favourite = vocab, favourite
        self.p = torch.nn.Parameter(torch.zeros(1))
        self.windows = []

    def forward(self, input_ids, use_cache=False):
        self.windows.append(input_ids.clone())
        logits = torch.zeros(*input_ids.shape, self.vocab)
        if self.favourite is not None:
            logits[..., self.favourite] = math.log(9.0)  # p(fav) = 9/18 = 0.5 with vocab 10
        return type("Out", (), {"logits": logits})()


def test_uniform_model_has_perplexity_vocab():
    m = Uniform(vocab=10)
    assert qpass.perplexity(m, torch.arange(100) % 10, seq_len=16, progress=False) == pytest.approx(10.0)


def test_windows_are_non_overlapping_and_first_token_unscored():
    m = Uniform(vocab=10, favourite=3)
    # windows of 4: [3,3,3,3] [5,3,3,3]: scored tokens are 3,3,3 and 3,3,3 -> p = 0.5 each
    ids = torch.tensor([3, 3, 3, 3, 5, 3, 3, 3])
    assert qpass.perplexity(m, ids, seq_len=4, progress=False) == pytest.approx(2.0)
    assert [w.tolist() for w in m.windows] == [[[3, 3, 3, 3]], [[5, 3, 3, 3]]]


def test_stride_scores_each_token_once():
    m = Uniform(vocab=10, favourite=3)
    ids = torch.tensor([3, 3, 3, 3, 3, 3, 5, 3])  # only the 5 is unlikely: p(5) = 1/18
    ppl = qpass.perplexity(m, ids, seq_len=4, stride=2, progress=False)
    expected = math.exp((6 * math.log(2) + math.log(18)) / 7)  # 7 scored tokens, each once
    assert ppl == pytest.approx(expected)


def test_bad_arguments():
    m = Uniform()
    with pytest.raises(ValueError):
        qpass.perplexity(m, torch.tensor([1]), progress=False)
    with pytest.raises(ValueError):
        qpass.perplexity(m, torch.arange(10), seq_len=4, stride=5, progress=False)
