"""RLOO with LoRA and verifiable rewards: k replies per prompt, each judged against the mean of the other k - 1.

    llm-tuning rloo --data questions.jsonl --sft_adapter weights/sft --reward exact_match --reward format \
        --num_generations 4 --batch_size 4 --max_steps 50 --beta 0.04 --output_dir weights/rloo

REINFORCE Leave-One-Out (Ahmadian et al. 2024): the same online loop, rollouts, rewards (built-in
exact_match against the row's `answer`, format, your functions, or a reward model), checkpoints and
reports as `llm-tuning grpo` (rlhf/loop.py, rlhf/grpo.py's step); only the advantage differs: reply i's
reward minus the mean reward of the other replies to its prompt (reward_math.leave_one_out_advantages),
not divided by a std. The update is the clipped objective with a k3 KL penalty `beta` toward the
reference, as in `grpo`; with one pass (--num_iterations 1) and one update per batch (--mini_batch_size
= batch_size x num_generations) the ratio is 1, the clip never binds, and it is plain REINFORCE with the
leave-one-out baseline.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from llm_tuning.config import LoraOptions, ModelOptions, option, validate_groups
from llm_tuning.rlhf.grpo import GroupOptions, run_group
from llm_tuning.rlhf.loop import OnlineResult, RolloutOptions
from llm_tuning.rlhf.reward_math import leave_one_out_advantages


@dataclass
class RLOOConfig(GroupOptions, ModelOptions, LoraOptions, RolloutOptions):
    """RLOO on a LoRA policy with verifiable reward functions (or a reward model)."""

    output_dir: str = option("weights/rloo", "where the adapter, logs and checkpoints go")
    normalize_advantages: bool = option(False, "divide the advantages by their std over the batch")

    def __post_init__(self) -> None:
        validate_groups(self)

    def advantages(self, rewards: torch.Tensor) -> torch.Tensor:
        """(replies,) leave-one-out advantages (over the batch std with --normalize_advantages)."""
        advantages = leave_one_out_advantages(rewards, self.num_generations)
        if self.normalize_advantages and advantages.numel() > 1:
            advantages = advantages / (advantages.std() + 1e-4)
        return advantages


def run(cfg: RLOOConfig) -> OnlineResult:
    """Load the policy (+ reference adapter), then run RLOO steps; writes the adapter and its report."""
    return run_group(cfg)
