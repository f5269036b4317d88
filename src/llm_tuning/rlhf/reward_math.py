"""The maths of preference learning: the pairwise reward-model loss, DPO losses, GRPO group advantages.

Pure functions over torch tensors, used by `llm-tuning rm` (pairwise loss and accuracy), `llm-tuning
dpo` (to report and check the losses TRL's DPOTrainer optimises) and `llm-tuning grpo`:

    loss = pairwise_reward_loss(rm(chosen).logits[:, 0], rm(rejected).logits[:, 0])
    losses, chosen_rewards, rejected_rewards = dpo_loss(pc, pr, rc, rr, beta=0.1)
    advantages = group_advantages(scores, group_size=8)
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

DPO_LOSS_TYPES = ("sigmoid", "ipo", "hinge")


def pairwise_reward_loss(
    chosen_rewards: torch.Tensor, rejected_rewards: torch.Tensor, margin: torch.Tensor | None = None
) -> torch.Tensor:
    """Bradley-Terry loss of a reward model: mean(-logsigmoid(r_chosen - r_rejected - margin)).

    chosen_rewards, rejected_rewards: (batch,) scalar rewards of each pair (any equal shapes work);
    margin: optional (batch,) required gap, as in Llama 2 and TRL's RewardTrainer. Returns a 0-dim loss.
    """
    if chosen_rewards.shape != rejected_rewards.shape:
        raise ValueError(
            f"chosen and rejected rewards must have the same shape; got {tuple(chosen_rewards.shape)} "
            f"and {tuple(rejected_rewards.shape)}"
        )
    gap = chosen_rewards - rejected_rewards
    if margin is not None:
        gap = gap - margin
    return -F.logsigmoid(gap).mean()


def pairwise_accuracy(chosen_rewards: torch.Tensor, rejected_rewards: torch.Tensor) -> torch.Tensor:
    """Share of pairs whose chosen reward is strictly higher (a tie counts as wrong); 0-dim float tensor."""
    return (chosen_rewards > rejected_rewards).float().mean()


def dpo_loss(
    policy_chosen_logps: torch.Tensor,
    policy_rejected_logps: torch.Tensor,
    ref_chosen_logps: torch.Tensor,
    ref_rejected_logps: torch.Tensor,
    beta: float = 0.1,
    loss_type: str = "sigmoid",
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-pair DPO losses and implicit rewards, as in TRL's DPOTrainer (reverse-KL DPO).

    All inputs are (batch,) log-probs of whole completions (summed over their tokens). With
    h = (pc - rc) - (pr - rr):
        sigmoid: -logsigmoid(beta * h)   (Rafailov et al. 2023)
        hinge:   relu(1 - beta * h)       (SLiC)
        ipo:     (h - 1 / (2 * beta))^2   (Azar et al. 2023; TRL feeds it log-probs averaged over
                                           each completion's tokens, so pass those to match TRL)
    Returns (losses (batch,), chosen_rewards, rejected_rewards), the rewards being
    beta * (policy - ref) log-probs, detached, as TRL logs them under rewards/chosen, rewards/rejected.
    """
    chosen_logratios = policy_chosen_logps - ref_chosen_logps
    rejected_logratios = policy_rejected_logps - ref_rejected_logps
    h = chosen_logratios - rejected_logratios  # (batch,)
    if loss_type == "sigmoid":
        losses = -F.logsigmoid(beta * h)
    elif loss_type == "hinge":
        losses = torch.relu(1.0 - beta * h)
    elif loss_type == "ipo":
        losses = (h - 1.0 / (2.0 * beta)) ** 2
    else:
        raise ValueError(f"loss_type must be one of {', '.join(DPO_LOSS_TYPES)}; got {loss_type!r}")
    chosen_rewards = beta * chosen_logratios.detach()
    rejected_rewards = beta * rejected_logratios.detach()
    return losses, chosen_rewards, rejected_rewards


def group_advantages(
    rewards: torch.Tensor, group_size: int, scale: bool = True, eps: float = 1e-4
) -> torch.Tensor:
    """GRPO advantages: each reward minus its group's mean, divided by the group's std + eps if `scale`.

    rewards: (num_prompts * group_size,), the completions of one prompt next to each other (the order
    TRL's GRPOTrainer uses). The std is the unbiased one, as TRL's; a group of one has std 0 and
    advantage 0. scale=False keeps the centred rewards (Dr. GRPO). Returns (num_prompts * group_size,).
    """
    if group_size < 1 or rewards.numel() % group_size != 0:
        raise ValueError(
            f"group_size must be >= 1 and divide the number of rewards ({rewards.numel()}); got {group_size}"
        )
    grouped = rewards.reshape(-1, group_size)  # (num_prompts, group_size)
    centred = grouped - grouped.mean(dim=1, keepdim=True)
    if scale:
        if group_size > 1:
            std = grouped.std(dim=1, keepdim=True)  # unbiased
        else:
            std = torch.zeros_like(grouped)
        centred = centred / (std + eps)
    return centred.reshape(rewards.shape)


def leave_one_out_advantages(rewards: torch.Tensor, group_size: int) -> torch.Tensor:
    """RLOO advantages: each reward minus the mean reward of the other k - 1 replies to the same prompt.

    rewards: (num_prompts * group_size,), the replies of one prompt next to each other. The baseline of
    reply i leaves reply i out, so it does not depend on i's own sample (an unbiased estimate); it equals
    k / (k - 1) x (reward - group mean). Needs k >= 2. Returns (num_prompts * group_size,).
    """
    if group_size < 2 or rewards.numel() % group_size != 0:
        raise ValueError(
            f"group_size must be >= 2 and divide the number of rewards ({rewards.numel()}); got {group_size}"
        )
    grouped = rewards.reshape(-1, group_size)  # (num_prompts, k)
    others = (grouped.sum(dim=1, keepdim=True) - grouped) / (group_size - 1)  # mean of the other k - 1
    return (grouped - others).reshape(rewards.shape)
