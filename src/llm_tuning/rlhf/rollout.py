"""Rollouts for `llm-tuning ppo` and `grpo`: sample replies from the policy, score them, get log-probs.

A rollout batch lays every sequence out the same way: the prompt left-padded to P tokens, then the
reply right-padded to R tokens. `response_mask` (n, R) is 1 on the reply up to and including its first
EOS, so per-token tensors (log-probs, values, rewards) are (n, R) and line up with ppo_math.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from llm_tuning.rlhf.data import PromptRow
from llm_tuning.rlhf.masked_ops import logprobs_from_logits
from llm_tuning.rlhf.rewards import NamedReward, call_reward, columns_of

logger = logging.getLogger(__name__)


@dataclass
class SamplingOptions:
    max_new_tokens: int = 64
    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0
    suppress_eos_first: bool = False  # no EOS as the first reply token (empty replies)
    max_prompt_length: int = 512


@dataclass
class Rollout:
    input_ids: torch.Tensor  # (n, P + R): left-padded prompt, then the reply right-padded
    attention_mask: torch.Tensor  # (n, P + R)
    response_mask: torch.Tensor  # (n, R): 1 on reply tokens up to and including the first EOS
    prompt_length: int  # P
    prompts: list[str]  # the user's prompt text of each sequence
    completions: list[str]  # the decoded replies

    def __len__(self) -> int:
        return self.input_ids.shape[0]


def eos_ids(tokenizer: Any, model: Any = None) -> list[int]:
    """Every token that ends a reply: the tokenizer's EOS and the model's generation EOS ids."""
    ids = {tokenizer.eos_token_id}
    gen = getattr(model, "generation_config", None)
    extra = getattr(gen, "eos_token_id", None)
    ids |= set(extra) if isinstance(extra, list) else {extra}
    return sorted(i for i in ids if i is not None)


def reply_mask(tokens: torch.Tensor, stop_ids: list[int]) -> torch.Tensor:
    """(n, R) mask: 1 up to and including each row's first stop token (all 1 if it never stops)."""
    is_stop = torch.isin(tokens, torch.tensor(stop_ids, device=tokens.device))
    stops_before = is_stop.long().cumsum(-1) - is_stop.long()  # stops strictly before each position
    return (stops_before == 0).long()


@torch.no_grad()
def sample_rollout(model: Any, tokenizer: Any, prompts: list[str], user_prompts: list[str], opts: SamplingOptions,
                   num_samples: int = 1) -> Rollout:  # fmt: skip
    """Sample `num_samples` replies per rendered prompt (a prompt's samples are adjacent)."""
    side, trunc = tokenizer.padding_side, tokenizer.truncation_side
    tokenizer.padding_side, tokenizer.truncation_side = "left", "left"
    try:
        batch = tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False, truncation=True,
                          max_length=opts.max_prompt_length)  # fmt: skip
    finally:
        tokenizer.padding_side, tokenizer.truncation_side = side, trunc
    device = next(model.parameters()).device
    batch = {k: v.to(device) for k, v in batch.items()}
    stop = eos_ids(tokenizer, model)
    output = model.generate(
        **batch, do_sample=True, num_return_sequences=num_samples, max_new_tokens=opts.max_new_tokens,
        temperature=opts.temperature, top_k=opts.top_k, top_p=opts.top_p, min_new_tokens=1 if opts.suppress_eos_first else 0,
        pad_token_id=tokenizer.pad_token_id, eos_token_id=stop, use_cache=True,
    )  # fmt: skip
    prompt_length = batch["input_ids"].shape[1]
    reply = output[:, prompt_length:]  # (n, R)
    mask = reply_mask(reply, stop)
    reply = torch.where(mask.bool(), reply, torch.full_like(reply, tokenizer.pad_token_id))
    prompt_mask = batch["attention_mask"].repeat_interleave(num_samples, 0)
    texts = [
        tokenizer.decode(row[: int(m.sum())], skip_special_tokens=True).strip()
        for row, m in zip(reply, mask, strict=True)
    ]
    return Rollout(
        input_ids=torch.cat([batch["input_ids"].repeat_interleave(num_samples, 0), reply], dim=1),
        attention_mask=torch.cat([prompt_mask, mask], dim=1), response_mask=mask, prompt_length=prompt_length,
        prompts=[p for p in user_prompts for _ in range(num_samples)], completions=texts,
    )  # fmt: skip


def response_logprobs(model: Any, rollout: Rollout, index: torch.Tensor, temperature: float = 1.0,
                      value_head: nn.Module | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:  # fmt: skip
    """Log-probs (k, R) of the rows' reply tokens under `model` (and values (k, R) from `value_head`).

    Position t holds log p(reply token t | everything before it) and the value of the state before it.
    Logits are divided by the sampling temperature, so the log-probs are those of the sampling policy.
    """
    ids, mask = rollout.input_ids[index], rollout.attention_mask[index]
    reply_len = ids.shape[1] - rollout.prompt_length
    position_ids = (mask.cumsum(-1) - 1).clamp(
        min=0
    )  # left padding: positions start at each prompt's first token
    out = model(input_ids=ids, attention_mask=mask, position_ids=position_ids, use_cache=False,
                output_hidden_states=value_head is not None, logits_to_keep=reply_len + 1)  # fmt: skip
    logits = out.logits[:, :-1].float() / temperature  # (k, R, vocab): position P-1+t predicts reply token t
    logps = logprobs_from_logits(logits, ids[:, rollout.prompt_length :])
    values = None
    if value_head is not None:
        hidden = out.hidden_states[-1][:, rollout.prompt_length - 1 : -1]  # (k, R, hidden)
        values = value_head(hidden.to(value_head.weight.dtype)).squeeze(-1).float()
    return logps, values


@torch.no_grad()
def rollout_logprobs(model: Any, rollout: Rollout, batch_size: int, temperature: float = 1.0,
                     value_head: nn.Module | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:  # fmt: skip
    """`response_logprobs` over the whole rollout in chunks, without gradients."""
    logps, values = [], []
    for start in range(0, len(rollout), batch_size):
        index = torch.arange(start, min(start + batch_size, len(rollout)))
        lp, v = response_logprobs(model, rollout, index, temperature, value_head)
        logps.append(lp)
        values.append(v)
    return torch.cat(logps), (torch.cat(values) if value_head is not None else None)  # type: ignore[arg-type]


class RewardScorer:
    """Scores of a rollout: the reward model's (sigmoid of its score by default) plus weighted functions."""

    def __init__(self, functions: list[NamedReward], reward_model: Any = None, sigmoid: bool = True,
                 baseline: float = 0.0) -> None:  # fmt: skip
        self.functions, self.reward_model, self.sigmoid, self.baseline = (
            functions,
            reward_model,
            sigmoid,
            baseline,
        )

    def __call__(self, rollout: Rollout, rows: list[PromptRow]) -> tuple[torch.Tensor, dict[str, float]]:
        """(scores (n,), {"reward/<name>": mean}); `rows` holds one row per sequence."""
        device = rollout.input_ids.device
        total = torch.zeros(len(rollout), device=device)
        parts: dict[str, float] = {}
        if self.reward_model is not None:
            raw = self.reward_model.score(rollout.input_ids, rollout.attention_mask)
            score = torch.sigmoid(raw) if self.sigmoid else raw
            total += score.to(device)
            parts["reward/model"] = score.mean().item()
        columns = columns_of([row.fields for row in rows])
        for fn in self.functions:
            values = torch.tensor(
                call_reward(fn, rollout.prompts, rollout.completions, columns), device=device
            )
            total += fn.weight * values
            parts[f"reward/{fn.key}"] = values.mean().item()
        return total - self.baseline, parts
