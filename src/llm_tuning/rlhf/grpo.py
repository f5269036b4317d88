"""GRPO with LoRA and verifiable rewards: sample a group of replies per prompt, reward each, push up the better.

    llm-tuning grpo --data questions.jsonl --sft_adapter weights/sft --reward exact_match --reward format \
        --num_generations 4 --batch_size 4 --max_steps 50 --beta 0.04 --output_dir weights/grpo
    llm-tuning grpo --data questions.jsonl --reward my_rewards.py:brevity

Each step: `batch_size` prompts x `num_generations` sampled replies -> rewards (built-in exact_match
against the row's `answer`, format, your functions, or a reward model) -> group advantages (reward minus
the group mean, over the group std) -> `num_iterations` passes of the clipped objective with a k3 KL
penalty `beta` toward the reference (the same base, adapters off or the starting adapter). A compact loop
rather than TRL's GRPOTrainer: it shares rollouts, checkpoints and reports with `llm-tuning ppo`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import torch

from llm_tuning.config import ConfigError, LoraOptions, ModelOptions, check_positive, option, validate_groups
from llm_tuning.rlhf.common import reference_context
from llm_tuning.rlhf.data import PromptRow
from llm_tuning.rlhf.loop import (
    OnlineResult,
    Policy,
    RolloutOptions,
    load_policy,
    minibatch_generator,
    minibatch_updates,
    prompt_texts,
    run_online,
)
from llm_tuning.rlhf.masked_ops import masked_mean
from llm_tuning.rlhf.ppo_math import kl_penalty, ppo_policy_loss
from llm_tuning.rlhf.reward_math import group_advantages
from llm_tuning.rlhf.rollout import response_logprobs, rollout_logprobs, sample_rollout

logger = logging.getLogger(__name__)


@dataclass
class GroupOptions:
    """What GRPO and RLOO share: a group of sampled replies per prompt and clipped updates on them."""

    batch_size: int = option(4, "prompts per step (each gets --num_generations replies)")
    num_generations: int = option(4, "replies sampled per prompt (the group)")
    num_iterations: int = option(1, "optimisation passes over each batch of replies")
    beta: float = option(0.04, "weight of the KL penalty toward the reference (0: none, no reference pass)")
    epsilon: float = option(0.2, "policy ratio clip range")

    def __post_init__(self) -> None:
        check_positive("num_iterations", self.num_iterations)
        check_positive("epsilon", self.epsilon)
        check_positive("beta", self.beta, allow_zero=True)
        if self.num_generations < 2:
            raise ConfigError(
                f"--num_generations must be >= 2 (advantages compare replies to one prompt), got {self.num_generations}"
            )


@dataclass
class GRPOConfig(GroupOptions, ModelOptions, LoraOptions, RolloutOptions):
    """GRPO on a LoRA policy with verifiable reward functions (or a reward model)."""

    output_dir: str = option("weights/grpo", "where the adapter, logs and checkpoints go")
    scale_rewards: bool = option(True, "divide advantages by the group's reward std (false: Dr. GRPO)")

    def __post_init__(self) -> None:
        validate_groups(self)

    def advantages(self, rewards: torch.Tensor) -> torch.Tensor:
        """(replies,) advantages: reward minus the group mean, over the group std with --scale_rewards."""
        return group_advantages(rewards, self.num_generations, scale=self.scale_rewards)


def make_step(cfg: Any, policy: Policy, optimizer: torch.optim.Optimizer):
    """The step function for run_online: one group rollout, then the clipped updates (GRPO's, or RLOO's:
    `cfg.advantages` turns the group's rewards into advantages)."""
    model = policy.model
    params = [p for p in model.parameters() if p.requires_grad]
    group = cfg.num_generations

    def step(step: int, rows: list[PromptRow]) -> dict[str, float]:
        rendered, user = prompt_texts(policy, rows, cfg)
        rollout = sample_rollout(model, policy.tokenizer, rendered, user, cfg.sampling(), num_samples=group)
        mask = rollout.response_mask.float()
        scores, parts = policy.scorer(rollout, [row for row in rows for _ in range(group)])
        advantages = cfg.advantages(scores)  # (n,)
        old_logps, _ = rollout_logprobs(model, rollout, cfg.mini_batch_size, cfg.temperature)
        ref_logps = None
        if cfg.beta > 0:
            with reference_context(model, policy.reference):
                ref_logps, _ = rollout_logprobs(model, rollout, cfg.mini_batch_size, cfg.temperature)

        def loss_fn(index: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
            logps, _ = response_logprobs(model, rollout, index, cfg.temperature)
            token_adv = (
                advantages[index].unsqueeze(-1).expand_as(logps)
            )  # one advantage for every token of a reply
            pg_loss, clipfrac, _ = ppo_policy_loss(
                logps, old_logps[index], token_adv, mask[index], cfg.epsilon
            )
            stats = {"loss/policy": pg_loss.item(), "clipfrac": clipfrac.item()}
            if ref_logps is None:
                return pg_loss, stats
            kl = masked_mean(kl_penalty(logps, ref_logps[index], "k3"), mask[index])
            return pg_loss + cfg.beta * kl, {**stats, "kl": kl.item()}

        stats = minibatch_updates(optimizer, params, len(rollout), cfg.num_iterations, cfg.mini_batch_size, loss_fn,
                                  minibatch_generator(cfg.seed, step), cfg.max_grad_norm)  # fmt: skip
        grouped = scores.reshape(-1, group)
        return {"reward": scores.mean().item(), **parts, "reward_std": grouped.std(dim=1).mean().item(), **stats,
                "response_length": mask.sum(-1).mean().item()}  # fmt: skip

    return step


def run(cfg: GRPOConfig) -> OnlineResult:
    """Load the policy (+ reference adapter), then run GRPO steps; writes the adapter and its report."""
    return run_group(cfg)


def run_group(cfg: Any) -> OnlineResult:
    """The loop GRPO and RLOO share (they differ only in `cfg.advantages`): policy, optimizer, steps."""
    from transformers import set_seed

    set_seed(cfg.seed)
    policy = load_policy(cfg)
    optimizer = torch.optim.AdamW(
        [p for p in policy.model.parameters() if p.requires_grad], lr=cfg.learning_rate
    )
    return run_online(cfg, policy, make_step(cfg, policy, optimizer), optimizer)
