"""Masked statistics and log-probs against values worked out by hand."""

import math

import pytest
import torch

from llm_tuning.rlhf.masked_ops import (
    logprobs_from_logits,
    masked_mean,
    masked_sum,
    masked_var,
    masked_whiten,
)

VALUES = torch.tensor([[1.0, 2.0, 3.0, 4.0], [10.0, 20.0, 30.0, 40.0]])
MASK = torch.tensor([[1, 1, 0, 0], [1, 1, 1, 0]])  # rows cut after 2 and 3 tokens


def test_masked_mean_over_all_tokens():
    # (1 + 2 + 10 + 20 + 30) / 5 = 63 / 5
    assert masked_mean(VALUES, MASK).item() == pytest.approx(12.6)


def test_masked_mean_per_row_and_keepdim():
    # row 0: (1 + 2) / 2 = 1.5; row 1: (10 + 20 + 30) / 3 = 20
    torch.testing.assert_close(masked_mean(VALUES, MASK, dim=-1), torch.tensor([1.5, 20.0]))
    assert masked_mean(VALUES, MASK, dim=-1, keepdim=True).shape == (2, 1)


def test_masked_mean_accepts_bool_mask():
    assert masked_mean(VALUES, MASK.bool()).item() == pytest.approx(12.6)


def test_masked_positions_holding_nan_or_inf_are_ignored():
    values = torch.tensor([[1.0, 3.0, float("-inf"), float("nan")]])
    mask = torch.tensor([[1, 1, 0, 0]])
    assert masked_sum(values, mask).item() == 4.0
    assert masked_mean(values, mask).item() == 2.0


def test_all_masked_mean_is_zero_with_finite_gradient():
    values = torch.tensor([[1.0, 2.0], [3.0, 4.0]], requires_grad=True)
    mask = torch.zeros(2, 2)
    mean = masked_mean(values, mask)
    mean.backward()
    assert mean.item() == 0.0
    assert torch.equal(values.grad, torch.zeros(2, 2))
    torch.testing.assert_close(masked_mean(values, mask, dim=-1), torch.zeros(2))


def test_masked_var_biased_and_unbiased():
    values = torch.tensor([1.0, 2.0, 3.0, 100.0])
    mask = torch.tensor([1, 1, 1, 0])
    # mean 2; squared deviations 1, 0, 1: biased 2 / 3, unbiased 2 / 2 = 1
    assert masked_var(values, mask, unbiased=False).item() == pytest.approx(2 / 3)
    assert masked_var(values, mask).item() == pytest.approx(1.0)


def test_masked_var_of_fewer_than_two_tokens_is_zero():
    values = torch.tensor([5.0, 7.0])
    assert masked_var(values, torch.tensor([1, 0])).item() == 0.0
    assert masked_var(values, torch.tensor([0, 0])).item() == 0.0


def test_masked_whiten_by_hand():
    values = torch.tensor([2.0, 4.0, 6.0, 100.0])
    mask = torch.tensor([1, 1, 1, 0])
    # mean 4, unbiased var (4 + 0 + 4) / 2 = 4, std 2: (v - 4) / 2; the masked position becomes 0
    torch.testing.assert_close(masked_whiten(values, mask), torch.tensor([-1.0, 0.0, 1.0, 0.0]))
    # shift_mean=False adds the mean 4 back
    torch.testing.assert_close(
        masked_whiten(values, mask, shift_mean=False), torch.tensor([3.0, 4.0, 5.0, 0.0])
    )


def test_masked_whiten_gives_zero_mean_unit_variance_on_random_data():
    torch.manual_seed(0)
    values = torch.randn(4, 7) * 3 + 5
    mask = (torch.arange(7) < torch.tensor([[7], [5], [2], [4]])).int()
    whitened = masked_whiten(values, mask)
    assert masked_mean(whitened, mask).item() == pytest.approx(0.0, abs=1e-5)
    assert masked_var(whitened, mask).item() == pytest.approx(1.0, abs=1e-4)
    assert torch.all(whitened[mask == 0] == 0)


def test_masked_whiten_all_masked_has_no_nan():
    whitened = masked_whiten(torch.randn(2, 3), torch.zeros(2, 3))
    assert torch.equal(whitened, torch.zeros(2, 3))


def test_logprobs_from_logits_by_hand():
    # logits (0, 0, ln 2) -> probabilities (1/4, 1/4, 1/2)
    logits = torch.tensor([[[0.0, 0.0, math.log(2.0)], [0.0, 0.0, math.log(2.0)]]])  # (1, 2, 3)
    labels = torch.tensor([[2, 0]])
    torch.testing.assert_close(
        logprobs_from_logits(logits, labels), torch.tensor([[math.log(0.5), math.log(0.25)]])
    )


def test_logprobs_from_logits_matches_log_softmax_and_ignores_minus_100():
    torch.manual_seed(0)
    logits = torch.randn(3, 5, 11)
    labels = torch.randint(0, 11, (3, 5))
    labels[1, 3:] = -100
    expected = torch.log_softmax(logits, dim=-1).gather(-1, labels.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    expected[1, 3:] = 0.0
    logps = logprobs_from_logits(logits, labels)
    assert logps.shape == (3, 5)
    torch.testing.assert_close(logps, expected)


def test_logprobs_from_bf16_logits_are_float32_and_close():
    torch.manual_seed(0)
    logits = torch.randn(2, 4, 9).to(torch.bfloat16)
    labels = torch.randint(0, 9, (2, 4))
    logps = logprobs_from_logits(logits, labels)
    assert logps.dtype == torch.float32
    torch.testing.assert_close(logps, logprobs_from_logits(logits.float(), labels))
