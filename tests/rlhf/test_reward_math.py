"""Reward-model, DPO and GRPO maths against values worked out by hand."""

import math

import pytest
import torch

from llm_tuning.rlhf.reward_math import (
    dpo_loss,
    group_advantages,
    leave_one_out_advantages,
    pairwise_accuracy,
    pairwise_reward_loss,
)


def test_pairwise_reward_loss_by_hand():
    # pair 0: -logsigmoid(1) = log(1 + e^-1); pair 1: -logsigmoid(0) = log 2
    loss = pairwise_reward_loss(torch.tensor([1.0, 0.0]), torch.tensor([0.0, 0.0]))
    assert loss.item() == pytest.approx((math.log(1 + math.exp(-1)) + math.log(2)) / 2)


def test_pairwise_reward_loss_margin_and_gradient():
    chosen = torch.tensor([2.0, 0.5], requires_grad=True)
    rejected = torch.tensor([0.0, 1.0])
    loss = pairwise_reward_loss(chosen, rejected, margin=torch.tensor([1.0, 0.0]))
    # gaps 2 - 0 - 1 = 1 and 0.5 - 1 = -0.5
    assert loss.item() == pytest.approx((math.log(1 + math.exp(-1)) + math.log(1 + math.exp(0.5))) / 2)
    loss.backward()
    # d/d r_c of -logsigmoid(g) / 2 = -(1 - sigmoid(g)) / 2
    sigmoid = lambda g: 1 / (1 + math.exp(-g))  # noqa: E731
    expected = [-(1 - sigmoid(1.0)) / 2, -(1 - sigmoid(-0.5)) / 2]
    torch.testing.assert_close(chosen.grad, torch.tensor(expected))


def test_pairwise_reward_loss_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match="same shape"):
        pairwise_reward_loss(torch.zeros(3), torch.zeros(3, 1))


def test_pairwise_accuracy_counts_ties_as_wrong():
    assert pairwise_accuracy(
        torch.tensor([1.0, 0.0, 2.0]), torch.tensor([0.0, 0.0, 3.0])
    ).item() == pytest.approx(1 / 3)


# pair 0: chosen log-ratio -10 - -11 = 1, rejected -12 - -11 = -1, h = 2
# pair 1: chosen log-ratio 0, rejected -4 - -5 = 1, h = -1
PC, PR = torch.tensor([-10.0, -5.0]), torch.tensor([-12.0, -4.0])
RC, RR = torch.tensor([-11.0, -5.0]), torch.tensor([-11.0, -5.0])


@pytest.mark.parametrize(
    ("loss_type", "expected"),
    [
        ("sigmoid", [math.log(1 + math.exp(-0.2)), math.log(1 + math.exp(0.1))]),  # -logsigmoid(0.1 * h)
        ("hinge", [0.8, 1.1]),  # relu(1 - 0.1 * h)
        ("ipo", [9.0, 36.0]),  # (h - 1 / 0.2)^2 = (2 - 5)^2, (-1 - 5)^2
    ],
)
def test_dpo_loss_by_hand(loss_type, expected):
    losses, chosen_rewards, rejected_rewards = dpo_loss(PC, PR, RC, RR, beta=0.1, loss_type=loss_type)
    torch.testing.assert_close(losses, torch.tensor(expected))
    torch.testing.assert_close(chosen_rewards, torch.tensor([0.1, 0.0]))  # beta * chosen log-ratio
    torch.testing.assert_close(rejected_rewards, torch.tensor([-0.1, 0.1]))


def test_dpo_sigmoid_matches_formula_on_random_data():
    torch.manual_seed(0)
    pc, pr, rc, rr = (torch.randn(6, dtype=torch.float64) * 20 - 50 for _ in range(4))
    beta = 0.3
    losses, _, _ = dpo_loss(pc, pr, rc, rr, beta=beta)
    for i in range(6):
        h = (pc[i].item() - rc[i].item()) - (pr[i].item() - rr[i].item())
        assert losses[i].item() == pytest.approx(-math.log(1 / (1 + math.exp(-beta * h))))


def test_dpo_rewards_are_detached_and_loss_is_not():
    pc = PC.clone().requires_grad_()
    losses, chosen_rewards, rejected_rewards = dpo_loss(pc, PR, RC, RR)
    assert losses.requires_grad
    assert not chosen_rewards.requires_grad and not rejected_rewards.requires_grad


def test_dpo_loss_rejects_unknown_type():
    with pytest.raises(ValueError, match="sigmoid, ipo, hinge"):
        dpo_loss(PC, PR, RC, RR, loss_type="kto")


def test_group_advantages_by_hand():
    rewards = torch.tensor([1.0, 2.0, 3.0, 5.0, 5.0, 5.0])
    # group 0: mean 2, unbiased std sqrt((1 + 0 + 1) / 2) = 1 -> (-1, 0, 1) / (1 + 1e-4)
    # group 1: all equal -> std 0 -> 0
    expected = torch.tensor([-1.0, 0.0, 1.0, 0.0, 0.0, 0.0])
    torch.testing.assert_close(group_advantages(rewards, group_size=3), expected / (1 + 1e-4))
    torch.testing.assert_close(group_advantages(rewards, group_size=3, scale=False), expected)


def test_group_advantages_groups_are_contiguous():
    rewards = torch.tensor([0.0, 4.0, 10.0, 10.0])
    # groups (0, 4) and (10, 10), not (0, 10) and (4, 10): means 2 and 10
    torch.testing.assert_close(group_advantages(rewards, 2, scale=False), torch.tensor([-2.0, 2.0, 0.0, 0.0]))


def test_group_of_one_gives_zero_advantage_not_nan():
    assert torch.equal(group_advantages(torch.tensor([3.0, -1.0]), group_size=1), torch.zeros(2))


def test_group_advantages_rejects_size_that_does_not_divide():
    with pytest.raises(ValueError, match="group_size"):
        group_advantages(torch.zeros(5), group_size=2)


def test_leave_one_out_advantages_by_hand():
    # prompt 1 (k = 4): rewards 1, 0, 0, 1 -> baselines (0+0+1)/3, (1+0+1)/3, (1+0+1)/3, (1+0+0)/3
    # prompt 2: all equal -> every advantage 0
    rewards = torch.tensor([1.0, 0.0, 0.0, 1.0, 2.0, 2.0, 2.0, 2.0])
    expected = torch.tensor([2 / 3, -2 / 3, -2 / 3, 2 / 3, 0.0, 0.0, 0.0, 0.0])
    torch.testing.assert_close(leave_one_out_advantages(rewards, group_size=4), expected)
    # k = 2: each reply's baseline is the other reply's reward
    torch.testing.assert_close(
        leave_one_out_advantages(torch.tensor([3.0, 1.0]), 2), torch.tensor([2.0, -2.0])
    )
    # k / (k - 1) x the GRPO-style centred reward, for any rewards
    noisy = torch.randn(12)
    centred = group_advantages(noisy, group_size=3, scale=False)
    torch.testing.assert_close(leave_one_out_advantages(noisy, 3), centred * 3 / 2)
    with pytest.raises(ValueError, match="group_size must be >= 2"):
        leave_one_out_advantages(torch.tensor([1.0, 2.0]), 1)
