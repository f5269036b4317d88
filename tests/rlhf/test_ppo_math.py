"""PPO maths against values worked out by hand and against naive Python loops."""

import math

import pytest
import torch

from llm_tuning.rlhf.ppo_math import (
    AdaptiveKLController,
    FixedKLController,
    compute_rewards,
    gae_advantages,
    kl_penalty,
    last_token_index,
    ppo_policy_loss,
    ppo_value_loss,
)

LOGP = torch.tensor([-1.0, -2.0])
REF = torch.tensor([-1.5, -1.0])  # logp - ref = (0.5, -1.0)


@pytest.mark.parametrize(
    ("kind", "expected"),
    [
        ("k1", [0.5, -1.0]),
        ("abs", [0.5, 1.0]),
        ("mse", [0.125, 0.5]),  # 0.5 * 0.25, 0.5 * 1
        # ref - logp = (-0.5, 1): exp(-0.5) + 0.5 - 1, exp(1) - 1 - 1
        ("k3", [math.exp(-0.5) - 0.5, math.e - 2.0]),
    ],
)
def test_kl_penalty_kinds_by_hand(kind, expected):
    torch.testing.assert_close(kl_penalty(LOGP, REF, kind), torch.tensor(expected))


def test_kl_penalty_k3_is_nonnegative_and_finite_far_from_the_reference():
    logp = torch.tensor([-100.0, 0.0, -3.0])
    ref = torch.tensor([0.0, -100.0, -3.0])
    kl = kl_penalty(logp, ref, "k3")
    assert torch.isfinite(kl).all()
    assert (kl >= 0).all()
    assert kl[2].item() == 0.0


def test_kl_penalty_rejects_unknown_kind():
    with pytest.raises(ValueError, match="k1, abs, mse, k3"):
        kl_penalty(LOGP, REF, "full")


def test_last_token_index():
    mask = torch.tensor([[1, 1, 1, 0], [1, 0, 0, 0], [0, 0, 0, 0], [0, 0, 1, 1]])
    assert last_token_index(mask).tolist() == [2, 0, 0, 3]


def test_compute_rewards_by_hand():
    logprobs = torch.tensor([[-1.0, -1.0, -1.0, -1.0], [-2.0, -2.0, -2.0, -2.0], [-1.0] * 4, [-1.0] * 4])
    ref_logprobs = torch.tensor([[-1.5, -1.0, -0.5, -9.0], [-1.0, -2.0, -2.0, -2.0], [-3.0] * 4, [-1.0] * 4])
    mask = torch.tensor([[1, 1, 1, 0], [1, 0, 0, 0], [0, 0, 0, 0], [0, 0, 1, 1]])
    scores = torch.tensor([2.0, -1.0, 5.0, 3.0])
    rewards, kl = compute_rewards(scores, logprobs, ref_logprobs, mask, kl_coef=0.1)
    # row 0: kl (0.5, 0, -0.5, masked); rewards -0.1 * kl, and the score 2 on token 2
    # row 1: kl (-1, masked...); rewards 0.1 - 1 = -0.9 on its only token
    # row 2: nothing in the mask: no KL, no score
    # row 3: response at tokens 2..3 (left padded), zero KL: the score 3 lands on token 3
    expected_kl = torch.tensor([[0.5, 0.0, -0.5, 0.0], [-1.0, 0, 0, 0], [0.0] * 4, [0.0] * 4])
    expected_rewards = torch.tensor(
        [[-0.05, 0.0, 2.05, 0.0], [-0.9, 0.0, 0.0, 0.0], [0.0] * 4, [0.0, 0.0, 0.0, 3.0]]
    )
    torch.testing.assert_close(kl, expected_kl)
    torch.testing.assert_close(rewards, expected_rewards)


def test_compute_rewards_with_k3_and_a_tensor_coefficient():
    logprobs = torch.tensor([[-1.0, -2.0]])
    ref_logprobs = torch.tensor([[-1.5, -1.0]])
    rewards, kl = compute_rewards(
        torch.tensor([1.0]), logprobs, ref_logprobs, torch.ones(1, 2), torch.tensor(0.5), "k3"
    )
    k3 = [math.exp(-0.5) - 0.5, math.e - 2.0]
    torch.testing.assert_close(kl, torch.tensor([k3]))
    torch.testing.assert_close(rewards, torch.tensor([[-0.5 * k3[0], -0.5 * k3[1] + 1.0]]))


def test_gae_by_hand():
    values = torch.tensor([[1.0, 2.0, 3.0, 9.0]])
    rewards = torch.tensor([[0.0, 0.0, 1.0, 7.0]])
    mask = torch.tensor([[1, 1, 1, 0]])
    # gamma = lam = 0.5; V after the mask is 0, so V = (1, 2, 3, 0), r = (0, 0, 1, 0)
    # t=2: delta = 1 + 0.5*0 - 3 = -2;   A2 = -2
    # t=1: delta = 0 + 0.5*3 - 2 = -0.5; A1 = -0.5 + 0.25*(-2) = -1
    # t=0: delta = 0 + 0.5*2 - 1 = 0;    A0 = 0 + 0.25*(-1) = -0.25
    advantages, returns = gae_advantages(values, rewards, mask, gamma=0.5, lam=0.5)
    torch.testing.assert_close(advantages, torch.tensor([[-0.25, -1.0, -2.0, 0.0]]))
    torch.testing.assert_close(returns, torch.tensor([[0.75, 1.0, 1.0, 0.0]]))  # A + V


def test_gae_with_gamma_and_lambda_one_is_reward_to_go_minus_value():
    values = torch.tensor([[0.5, 1.0, 2.0]])
    rewards = torch.tensor([[1.0, 2.0, 3.0]])
    advantages, returns = gae_advantages(values, rewards, torch.ones(1, 3), gamma=1.0, lam=1.0)
    # reward to go: 6, 5, 3
    torch.testing.assert_close(returns, torch.tensor([[6.0, 5.0, 3.0]]))
    torch.testing.assert_close(advantages, torch.tensor([[5.5, 4.0, 1.0]]))


def naive_gae(values, rewards, mask, gamma, lam):
    """GAE with plain Python floats, one row at a time, over that row's response span only."""
    advantages = [[0.0] * len(row) for row in values]
    for i, row_mask in enumerate(mask):
        span = [t for t, m in enumerate(row_mask) if m]
        if not span:
            continue
        start, end = span[0], span[-1] + 1
        last = 0.0
        for t in range(end - 1, start - 1, -1):
            next_value = values[i][t + 1] if t + 1 < end else 0.0
            delta = rewards[i][t] + gamma * next_value - values[i][t]
            last = delta + gamma * lam * last
            advantages[i][t] = last
    returns = [
        [a + (v if m else 0.0) for a, v, m in zip(*rows, strict=True)]
        for rows in zip(advantages, values, mask, strict=True)
    ]
    return advantages, returns


def test_gae_matches_naive_loop_on_random_data_with_ragged_masks():
    torch.manual_seed(0)
    values = torch.randn(5, 8, dtype=torch.float64)
    rewards = torch.randn(5, 8, dtype=torch.float64)
    mask = torch.tensor(
        [
            [1, 1, 1, 1, 1, 1, 1, 1],
            [1, 1, 1, 1, 1, 0, 0, 0],
            [1, 0, 0, 0, 0, 0, 0, 0],
            [0, 0, 0, 1, 1, 1, 0, 0],  # padding on both sides
            [0, 0, 0, 0, 0, 0, 0, 0],
        ]
    )
    advantages, returns = gae_advantages(values, rewards, mask, gamma=0.99, lam=0.95)
    expected_adv, expected_ret = naive_gae(values.tolist(), rewards.tolist(), mask.tolist(), 0.99, 0.95)
    torch.testing.assert_close(advantages, torch.tensor(expected_adv, dtype=torch.float64))
    torch.testing.assert_close(returns, torch.tensor(expected_ret, dtype=torch.float64))


def test_gae_outputs_are_detached():
    values = torch.randn(2, 3, requires_grad=True)
    advantages, returns = gae_advantages(values, torch.randn(2, 3), torch.ones(2, 3))
    assert not advantages.requires_grad and not returns.requires_grad


def policy_case():
    # ratio = exp(logp - old) = (1.5, 0.5, 1.0, 0.5, 1.1); the last token is masked out
    ratios = torch.tensor([1.5, 0.5, 1.0, 0.5, 1.1])
    logprobs = ratios.log().unsqueeze(0).requires_grad_()
    old_logprobs = torch.zeros(1, 5)
    advantages = torch.tensor([[1.0, 1.0, -1.0, -1.0, 100.0]])
    mask = torch.tensor([[1, 1, 1, 1, 0]])
    return logprobs, old_logprobs, advantages, mask


def test_ppo_policy_loss_by_hand():
    logprobs, old_logprobs, advantages, mask = policy_case()
    loss, clipfrac, approx_kl = ppo_policy_loss(logprobs, old_logprobs, advantages, mask, clip_range=0.2)
    # token 0: A=1,  r=1.5: max(-1.5, -1.2) = -1.2 (clipped)
    # token 1: A=1,  r=0.5: max(-0.5, -0.8) = -0.5
    # token 2: A=-1, r=1.0: max(1.0, 1.0)   = 1.0
    # token 3: A=-1, r=0.5: max(0.5, 0.8)   = 0.8 (clipped)
    # loss = (-1.2 - 0.5 + 1.0 + 0.8) / 4 = 0.025; clipfrac = 2 / 4
    assert loss.item() == pytest.approx(0.025)
    assert clipfrac.item() == pytest.approx(0.5)
    # approx_kl = 0.5 * mean of (log r)^2 over the 4 tokens
    expected_kl = 0.5 * (math.log(1.5) ** 2 + 2 * math.log(0.5) ** 2) / 4
    assert approx_kl.item() == pytest.approx(expected_kl)


def test_ppo_policy_loss_gradient_flows_only_through_unclipped_tokens():
    logprobs, old_logprobs, advantages, mask = policy_case()
    loss, _, _ = ppo_policy_loss(logprobs, old_logprobs, advantages, mask, clip_range=0.2)
    loss.backward()
    # d/d logp of -A * exp(logp - old) / 4 = -A * r / 4: token 1 -> -0.125, token 2 -> 0.25
    torch.testing.assert_close(logprobs.grad, torch.tensor([[0.0, -0.125, 0.25, 0.0, 0.0]]))


def test_ppo_policy_loss_all_masked_is_zero_not_nan():
    logprobs = torch.randn(2, 3, requires_grad=True)
    loss, clipfrac, approx_kl = ppo_policy_loss(
        logprobs, torch.randn(2, 3), torch.randn(2, 3), torch.zeros(2, 3)
    )
    loss.backward()
    assert loss.item() == 0.0 and clipfrac.item() == 0.0 and approx_kl.item() == 0.0
    assert torch.isfinite(logprobs.grad).all()


def test_ppo_value_loss_by_hand():
    values = torch.tensor([[1.0, 2.0, 0.0, 0.0, 5.0]], requires_grad=True)
    old_values = torch.tensor([[0.5, 2.5, 1.0, 0.1, 0.0]])
    returns = torch.tensor([[2.0, 2.0, 2.0, 1.0, 0.0]])
    mask = torch.tensor([[1, 1, 1, 1, 0]])
    loss, clipfrac = ppo_value_loss(values, old_values, returns, mask, clip_range_value=0.2)
    # token 0: v_clip = 0.5 + 0.2 = 0.7: max((1-2)^2, (0.7-2)^2) = max(1, 1.69) = 1.69 (clipped)
    # token 1: v_clip = 2.5 - 0.2 = 2.3: max(0, 0.09) = 0.09 (clipped)
    # token 2: v_clip = 1.0 - 0.2 = 0.8: max(4, 1.44) = 4
    # token 3: v - old = -0.1 is inside the range: max(1, 1) = 1
    # loss = 0.5 * (1.69 + 0.09 + 4 + 1) / 4 = 0.8475; clipfrac = 2 / 4
    assert loss.item() == pytest.approx(0.8475)
    assert clipfrac.item() == pytest.approx(0.5)
    loss.backward()
    # only tokens 2 and 3 pass gradient: 0.5 * 2 * (v - R) / 4 = (v - R) / 4
    torch.testing.assert_close(values.grad, torch.tensor([[0.0, 0.0, -0.5, -0.25, 0.0]]))


def test_adaptive_kl_controller_update_sequence_by_hand():
    ctl = AdaptiveKLController(init_kl_coef=0.2, target=6.0, horizon=10000)
    # KL 9: error 9/6 - 1 = 0.5 -> clipped to 0.2; x (1 + 0.2 * 256 / 10000) = x 1.00512
    assert ctl.update(9.0, n_steps=256) == pytest.approx(0.201024)
    # KL 3: error -0.5 -> -0.2; x 0.99488
    assert ctl.update(3.0, n_steps=256) == pytest.approx(0.201024 * 0.99488)
    # KL 6.6: error 0.1 (inside the clip); x (1 + 0.1 * 1000 / 10000) = x 1.01
    assert ctl.update(6.6, n_steps=1000) == pytest.approx(0.201024 * 0.99488 * 1.01)
    # on target: unchanged
    assert ctl.update(6.0, n_steps=1000) == pytest.approx(0.201024 * 0.99488 * 1.01)
    assert ctl.value == pytest.approx(0.19999475712 * 1.01)


def test_fixed_kl_controller_never_moves():
    ctl = FixedKLController(0.05)
    assert ctl.update(100.0, n_steps=512) == 0.05
    assert ctl.value == 0.05


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"init_kl_coef": -1.0, "target": 6.0, "horizon": 100}, "init_kl_coef"),
        ({"init_kl_coef": 0.1, "target": 0.0, "horizon": 100}, "target"),
        ({"init_kl_coef": 0.1, "target": 6.0, "horizon": 0}, "horizon"),
    ],
)
def test_adaptive_kl_controller_rejects_bad_values(kwargs, field):
    with pytest.raises(ValueError, match=field):
        AdaptiveKLController(**kwargs)
