"""PPO with LoRA: policy = base + adapter + value head; reference and reward model on the same base.

    llm-tuning ppo --data prompts.jsonl --sft_adapter weights/sft --reward_model weights/reward \
        --batch_size 8 --mini_batch_size 4 --ppo_epochs 4 --init_kl_coef 0.2 --adap_kl_ctrl true \
        --learning_rate 1.4e-5 --output_max_length 128 --max_steps 100 --output_dir weights/ppo

Each step: sample replies -> log-probs, reference log-probs and values (no grad) -> rewards (the reward
adapter's sigmoid score and/or reward functions) -> per-token rewards with a KL penalty -> GAE ->
`ppo_epochs` passes of clipped policy + value updates on minibatches. The value head is an nn.Linear on
the policy's last hidden state, saved as value_head.safetensors next to the adapter. TRL 1.13+ has no
PPO trainer; the maths is rlhf/ppo_math.py, the loop rlhf/loop.py.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file
from torch import nn

from llm_tuning.config import LoraOptions, ModelOptions, check_choice, check_positive, option, validate_groups
from llm_tuning.data.read import DataError
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
from llm_tuning.rlhf.masked_ops import masked_mean, masked_whiten
from llm_tuning.rlhf.ppo_math import (
    KL_KINDS,
    AdaptiveKLController,
    FixedKLController,
    compute_rewards,
    gae_advantages,
    ppo_policy_loss,
    ppo_value_loss,
)
from llm_tuning.rlhf.rollout import response_logprobs, rollout_logprobs, sample_rollout

logger = logging.getLogger(__name__)
VALUE_HEAD = "value_head"


@dataclass
class PPOConfig(ModelOptions, LoraOptions, RolloutOptions):
    """PPO on a LoRA policy with a value head, against a reward model or reward functions."""

    output_dir: str = option("weights/ppo", "where the adapter, value head, logs and checkpoints go")
    ppo_epochs: int = option(4, "optimisation passes over each rollout batch")
    init_kl_coef: float = option(0.2, "KL penalty coefficient (the start value when adaptive)")
    adap_kl_ctrl: bool = option(True, "adapt the KL coefficient toward --target_kl; false: keep it fixed")
    target_kl: float = option(6.0, "target KL per reply (nats) of the adaptive controller")
    kl_horizon: float = option(10000, "horizon of the adaptive KL controller (sequences)")
    kl_penalty: str = option("k1", "per-token KL estimate: k1, abs, mse, k3")
    gamma: float = option(1.0, "discount factor")
    lam: float = option(0.95, "GAE lambda")
    cliprange: float = option(0.2, "policy ratio clip range")
    cliprange_value: float = option(0.2, "value clip range")
    vf_coef: float = option(0.1, "weight of the value loss")

    def __post_init__(self) -> None:
        validate_groups(self)
        check_choice("kl_penalty", self.kl_penalty, KL_KINDS)
        for name in ("ppo_epochs", "target_kl", "kl_horizon", "cliprange", "cliprange_value"):
            check_positive(name, getattr(self, name))
        check_positive("init_kl_coef", self.init_kl_coef, allow_zero=True)


def value_head_for(model: nn.Module) -> nn.Linear:
    """A zero-initialised nn.Linear(hidden, 1): values start at 0, so the first advantages are the rewards."""
    config = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
    param = next(model.parameters())
    head = nn.Linear(config.hidden_size, 1).to(param.device, torch.float32)
    nn.init.zeros_(head.weight)
    nn.init.zeros_(head.bias)
    return head


def make_step(cfg: PPOConfig, policy: Policy, value_head: nn.Linear, optimizer: torch.optim.Optimizer,
              kl_ctl: AdaptiveKLController | FixedKLController):  # fmt: skip
    """The step function for run_online: one rollout batch, then the PPO updates on it."""
    model, params = (
        policy.model,
        [p for p in policy.model.parameters() if p.requires_grad] + list(value_head.parameters()),
    )

    def step(step: int, rows: list[PromptRow]) -> dict[str, float]:
        rendered, user = prompt_texts(policy, rows, cfg)
        rollout = sample_rollout(model, policy.tokenizer, rendered, user, cfg.sampling())
        mask = rollout.response_mask.float()
        old_logps, old_values = rollout_logprobs(
            model, rollout, cfg.mini_batch_size, cfg.temperature, value_head
        )
        with reference_context(model, policy.reference):
            ref_logps, _ = rollout_logprobs(model, rollout, cfg.mini_batch_size, cfg.temperature)
        scores, parts = policy.scorer(rollout, rows)
        rewards, kl = compute_rewards(scores, old_logps, ref_logps, mask, kl_ctl.value, cfg.kl_penalty)
        advantages, returns = gae_advantages(old_values, rewards, mask, cfg.gamma, cfg.lam)
        advantages = masked_whiten(advantages, mask)

        def loss_fn(index: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
            logps, values = response_logprobs(model, rollout, index, cfg.temperature, value_head)
            pg_loss, clipfrac, approx_kl = ppo_policy_loss(logps, old_logps[index], advantages[index], mask[index],
                                                           cfg.cliprange)  # fmt: skip
            vf_loss, vf_clipfrac = ppo_value_loss(
                values, old_values[index], returns[index], mask[index], cfg.cliprange_value
            )
            stats = {"loss/policy": pg_loss.item(), "loss/value": vf_loss.item(), "clipfrac": clipfrac.item(),
                     "approx_kl": approx_kl.item(), "vf_clipfrac": vf_clipfrac.item()}  # fmt: skip
            return pg_loss + cfg.vf_coef * vf_loss, stats

        stats = minibatch_updates(optimizer, params, len(rollout), cfg.ppo_epochs, cfg.mini_batch_size, loss_fn,
                                  minibatch_generator(cfg.seed, step), cfg.max_grad_norm)  # fmt: skip
        mean_kl = kl.sum(-1).mean().item()  # per reply, what the adaptive controller tracks
        coef = kl_ctl.value
        kl_ctl.update(mean_kl, n_steps=len(rollout))
        return {"reward": scores.mean().item(), **parts, "kl": mean_kl, "kl_coef": coef, **stats,
                "value_mean": masked_mean(old_values, mask).item(), "response_length": mask.sum(-1).mean().item()}  # fmt: skip

    return step


def run(cfg: PPOConfig) -> OnlineResult:
    """Load the policy (+ reference, reward), then run PPO steps; writes the adapter and value head."""
    from transformers import set_seed

    set_seed(cfg.seed)
    policy = load_policy(cfg)
    value_head = value_head_for(policy.model)
    saved_head = Path(cfg.sft_adapter or "") / f"{VALUE_HEAD}.safetensors"
    if cfg.sft_adapter and saved_head.is_file():  # continuing a PPO run
        try:
            value_head.load_state_dict(load_file(str(saved_head)))
        except Exception as err:  # a damaged file, or a head of another model's width
            raise DataError(saved_head, None, f"cannot be loaded as this model's value head ({err})",
                            hint="delete it to start a new value head, or pass the PPO run's own folder") from None  # fmt: skip
    params = [p for p in policy.model.parameters() if p.requires_grad] + list(value_head.parameters())
    optimizer = torch.optim.AdamW(params, lr=cfg.learning_rate)
    kl_ctl = (AdaptiveKLController(cfg.init_kl_coef, cfg.target_kl, cfg.kl_horizon) if cfg.adap_kl_ctrl
              else FixedKLController(cfg.init_kl_coef))  # fmt: skip

    def set_state(state: dict) -> None:
        kl_ctl.value = state.get("kl_coef", kl_ctl.value)

    step = make_step(cfg, policy, value_head, optimizer, kl_ctl)
    return run_online(
        cfg, policy, step, optimizer, {VALUE_HEAD: value_head}, (lambda: {"kl_coef": kl_ctl.value}, set_state)
    )
