"""The maths of PPO for language models: KL-shaped rewards, GAE, the clipped losses, the KL controllers.

Pure functions over torch tensors; `llm-tuning ppo` runs them on each rollout batch:

    kl_ctl = AdaptiveKLController(init_kl_coef=0.05, target=6.0, horizon=10000)
    rewards, kl = compute_rewards(scores, logprobs, ref_logprobs, mask, kl_ctl.value)
    advantages, returns = gae_advantages(values, rewards, mask, gamma=1.0, lam=0.95)
    advantages = masked_whiten(advantages, mask)
    pg_loss, pg_clipfrac, approx_kl = ppo_policy_loss(new_logprobs, logprobs, advantages, mask, 0.2)
    vf_loss, vf_clipfrac = ppo_value_loss(new_values, values, returns, mask, 0.2)
    kl_ctl.update(kl.sum(-1).mean().item(), n_steps=batch_size)

All per-token tensors are (batch, response_len) and aligned: position t holds the log-prob of response
token t and the value of the state before it. `mask` is 1 on response tokens and 0 on padding (and on
the prompt, if the tensors include it). Formulas follow Ziegler et al. (2019), TRL's former PPOTrainer
and OpenRLHF.
"""

from __future__ import annotations

import torch

from llm_tuning.rlhf.masked_ops import masked_mean

KL_KINDS = ("k1", "abs", "mse", "k3")


def kl_penalty(logprob: torch.Tensor, ref_logprob: torch.Tensor, kind: str = "k1") -> torch.Tensor:
    """Per-token estimate of KL(policy || reference) from the sampled tokens' log-probs.

    k1: logp - ref (unbiased, can be negative); abs: |logp - ref|; mse: 0.5 * (logp - ref)^2;
    k3: exp(ref - logp) - (ref - logp) - 1 (unbiased and >= 0, Schulman's estimator; ref - logp is
    clamped to [-10, 10] as OpenRLHF does, so one far-off token cannot overflow the batch).
    """
    diff = logprob - ref_logprob  # (batch, seq)
    if kind == "k1":
        return diff
    if kind == "abs":
        return diff.abs()
    if kind == "mse":
        return 0.5 * diff.square()
    if kind == "k3":
        log_ratio = (-diff).clamp(-10.0, 10.0)
        return log_ratio.exp() - log_ratio - 1.0
    raise ValueError(f"kl kind must be one of {', '.join(KL_KINDS)}; got {kind!r}")


def last_token_index(mask: torch.Tensor) -> torch.Tensor:
    """Index of the last set position of each row of a (batch, seq) mask; 0 for an empty row."""
    positions = torch.arange(1, mask.shape[-1] + 1, device=mask.device)  # 1-based, so 0 means "none"
    return ((mask != 0) * positions).argmax(dim=-1)


def compute_rewards(
    scores: torch.Tensor,
    logprobs: torch.Tensor,
    ref_logprobs: torch.Tensor,
    mask: torch.Tensor,
    kl_coef: float | torch.Tensor,
    kind: str = "k1",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token rewards: -kl_coef * KL on each response token, plus the score on the last one.

    scores: (batch,) reward-model scores; logprobs, ref_logprobs, mask: (batch, seq).
    Returns (rewards, kl), both (batch, seq) and 0 outside the mask; kl is the unscaled per-token
    estimate (kl.sum(-1).mean() is the value to feed the KL controller). A row with an empty mask
    gets no score.
    """
    mask = mask.to(logprobs.dtype)
    kl = torch.where(mask != 0, kl_penalty(logprobs, ref_logprobs, kind), torch.zeros_like(logprobs))
    rewards = -kl_coef * kl  # (batch, seq)
    has_tokens = (mask != 0).any(dim=-1)  # (batch,)
    last = last_token_index(mask).unsqueeze(-1)  # (batch, 1)
    score = torch.where(has_tokens, scores.to(rewards.dtype), torch.zeros_like(rewards[:, 0]))
    rewards = rewards.scatter_add(-1, last, score.unsqueeze(-1))
    return rewards, kl


def gae_advantages(
    values: torch.Tensor, rewards: torch.Tensor, mask: torch.Tensor, gamma: float = 1.0, lam: float = 0.95
) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalised advantage estimation (Schulman et al. 2016) over each response.

    values, rewards, mask: (batch, seq). Backwards over t:
        delta_t = r_t + gamma * V_{t+1} - V_t,   A_t = delta_t + gamma * lam * A_{t+1}
    with V and r taken as 0 outside the mask, so the value after the last response token is 0 (the
    episode ends there). Returns (advantages, returns = advantages + values), both 0 outside the
    mask and detached. The mask must be one contiguous run of tokens per row (padding at either end).
    """
    mask = mask.to(values.dtype)
    values = torch.where(mask != 0, values.detach(), torch.zeros_like(values))
    rewards = torch.where(mask != 0, rewards.detach(), torch.zeros_like(rewards))
    seq_len = values.shape[-1]
    advantages_reversed = []
    next_advantage = torch.zeros_like(values[:, 0])  # (batch,)
    for t in reversed(range(seq_len)):
        next_value = values[:, t + 1] if t + 1 < seq_len else torch.zeros_like(values[:, t])
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        next_advantage = delta + gamma * lam * next_advantage
        advantages_reversed.append(next_advantage)
    advantages = torch.stack(advantages_reversed[::-1], dim=-1)  # (batch, seq)
    # before a left-padded response delta_t = gamma * V_first != 0: the mask clears those positions
    advantages = advantages * mask
    returns = (advantages + values) * mask
    return advantages, returns


def ppo_policy_loss(
    logprobs: torch.Tensor,
    old_logprobs: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    clip_range: float = 0.2,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """PPO's clipped surrogate: token mean of max(-A * ratio, -A * clip(ratio, 1 - c, 1 + c)).

    logprobs (with grad), old_logprobs (from the rollout), advantages, mask: (batch, seq).
    Returns (loss, clipfrac, approx_kl): clipfrac is the share of tokens where the clipped term was
    chosen; approx_kl = token mean of 0.5 * (logp - old_logp)^2, both detached, for logging and early stop.
    """
    log_ratio = logprobs - old_logprobs.detach()
    ratio = log_ratio.exp()
    advantages = advantages.detach()
    unclipped = -advantages * ratio
    clipped = -advantages * ratio.clamp(1.0 - clip_range, 1.0 + clip_range)
    loss = masked_mean(torch.maximum(unclipped, clipped), mask)
    clipfrac = masked_mean((clipped > unclipped).to(logprobs.dtype), mask).detach()
    approx_kl = masked_mean(0.5 * log_ratio.detach().square(), mask)
    return loss, clipfrac, approx_kl


def ppo_value_loss(
    values: torch.Tensor,
    old_values: torch.Tensor,
    returns: torch.Tensor,
    mask: torch.Tensor,
    clip_range_value: float = 0.2,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Clipped value loss: token mean of 0.5 * max((v - R)^2, (v_clipped - R)^2).

    v_clipped = old_v + clip(v - old_v, -c, c) keeps the value head near its rollout estimate.
    values (with grad), old_values, returns, mask: (batch, seq). Returns (loss, clipfrac), clipfrac
    being the share of tokens where the clipped error was the larger one.
    """
    old_values, returns = old_values.detach(), returns.detach()
    clipped_values = old_values + (values - old_values).clamp(-clip_range_value, clip_range_value)
    unclipped_error = (values - returns).square()
    clipped_error = (clipped_values - returns).square()
    loss = 0.5 * masked_mean(torch.maximum(unclipped_error, clipped_error), mask)
    clipfrac = masked_mean((clipped_error > unclipped_error).to(values.dtype), mask).detach()
    return loss, clipfrac


class AdaptiveKLController:
    """KL coefficient that moves toward a target KL (Ziegler et al. 2019, section 2.2).

    After each batch: e = clip(current_kl / target - 1, -0.2, 0.2); value *= 1 + e * n_steps / horizon.
    """

    def __init__(self, init_kl_coef: float, target: float, horizon: float) -> None:
        if init_kl_coef < 0:
            raise ValueError(f"init_kl_coef must be >= 0; got {init_kl_coef}")
        if target <= 0:
            raise ValueError(f"target KL must be > 0; got {target}")
        if horizon <= 0:
            raise ValueError(f"horizon must be > 0; got {horizon}")
        self.value = float(init_kl_coef)
        self.target = float(target)
        self.horizon = float(horizon)

    def update(self, current_kl: float, n_steps: int) -> float:
        """Adjust the coefficient after `n_steps` samples whose mean KL was `current_kl`; returns it."""
        proportional_error = min(max(current_kl / self.target - 1.0, -0.2), 0.2)
        self.value *= 1.0 + proportional_error * n_steps / self.horizon
        return self.value


class FixedKLController:
    """A constant KL coefficient, with the same interface as AdaptiveKLController."""

    def __init__(self, kl_coef: float) -> None:
        if kl_coef < 0:
            raise ValueError(f"kl_coef must be >= 0; got {kl_coef}")
        self.value = float(kl_coef)

    def update(self, current_kl: float, n_steps: int) -> float:
        """Leave the coefficient as it is; returns it."""
        return self.value
