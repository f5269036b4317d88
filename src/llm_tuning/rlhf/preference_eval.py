"""Held-out preference scores, measured the same way for every method against the model training started from.

    llm-tuning dpo / orpo / simpo / cpo / kto ... --eval_split 0.1667   (reported in training_log.json)

With log-probs summed over a reply and its EOS (the tokens training scores), and the start model being
--sft_adapter (or the base model for a new adapter):
    logratio(reply)      = log p_policy(reply | prompt) - log p_start(reply | prompt)
    preference_accuracy  = share of pairs with logratio(chosen) > logratio(rejected)
                           (DPO's implicit reward accuracy with beta left out: it does not change the sign)
    logratio_margin      = mean of logratio(chosen) - logratio(rejected), in nats
    policy_accuracy      = share of pairs with log p_policy(chosen) > log p_policy(rejected)
For unpaired rows (KTO): label_agreement = share of rows whose logratio is > 0 for a good reply and
< 0 for a bad one. TRL's own reward accuracies differ by method (ORPO's and CPO's are the policy's
log-probs, KTO logs none), so these are the numbers to compare methods by.
"""

from __future__ import annotations

from typing import Any

import torch

from llm_tuning.data.encode import IGNORE_INDEX
from llm_tuning.eval.likelihood import target_nll
from llm_tuning.rlhf.common import add_adapter_from, reference_context, reference_kind
from llm_tuning.rlhf.data import FeedbackRow, encode_reply, render_prompt


def pair_scores(
    policy_chosen: torch.Tensor,
    policy_rejected: torch.Tensor,
    start_chosen: torch.Tensor,
    start_rejected: torch.Tensor,
) -> dict[str, float]:
    """The paired scores above from (pairs,) summed log-probs of each reply under the policy and the start model."""
    margin = (policy_chosen - start_chosen) - (policy_rejected - start_rejected)  # (pairs,)
    return {
        "preference_accuracy": (margin > 0).float().mean().item(),
        "logratio_margin": margin.mean().item(),
        "policy_accuracy": (policy_chosen > policy_rejected).float().mean().item(),
        "rows": float(margin.numel()),
    }


def label_scores(policy: torch.Tensor, start: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
    """KTO rows: the share whose log-ratio has the label's sign (true: > 0), and the mean log-ratio per label."""
    logratio = policy - start  # (rows,)
    agree = torch.where(labels, logratio > 0, logratio < 0)
    scores = {"label_agreement": agree.float().mean().item(), "rows": float(logratio.numel())}
    for name, chosen in (("desirable", labels), ("undesirable", ~labels)):
        if chosen.any():
            scores[f"{name}_logratio"] = logratio[chosen].mean().item()
    return scores


def reply_logps(model: Any, tokenizer: Any, prompts: list[str], replies: list[str]) -> torch.Tensor:
    """(rows,) log-probability of each reply + EOS after its rendered prompt."""
    encoded = []
    for prompt, reply in zip(prompts, replies, strict=True):
        ids = encode_reply(tokenizer, prompt, reply)
        n_prompt = len(tokenizer(prompt, add_special_tokens=False)["input_ids"])
        encoded.append((ids, [IGNORE_INDEX] * n_prompt + ids[n_prompt:]))
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    return -torch.tensor([nll for nll, _ in target_nll(model, encoded, pad)])


def held_out_scores(peft_model: Any, tokenizer: Any, rows: list, cfg: Any) -> dict[str, float]:
    """pair_scores (or label_scores for KTO rows) of the trained policy on `rows`, against the start model."""
    prompts = [render_prompt(tokenizer, r.prompt, cfg.template, cfg.system_prompt) for r in rows]
    kind = reference_kind("auto", cfg.sft_adapter)
    if kind == "initial" and "reference" not in peft_model.peft_config:
        add_adapter_from(peft_model, cfg.sft_adapter, "reference")
    training = peft_model.training
    peft_model.eval()  # no dropout: the scores must not depend on chance
    try:
        if isinstance(rows[0], FeedbackRow):
            texts = [r.completion for r in rows]
            policy = reply_logps(peft_model, tokenizer, prompts, texts)
            with reference_context(peft_model, kind):
                start = reply_logps(peft_model, tokenizer, prompts, texts)
            return label_scores(policy, start, torch.tensor([r.label for r in rows]))
        sides = [[r.chosen for r in rows], [r.rejected for r in rows]]
        policy = [reply_logps(peft_model, tokenizer, prompts, texts) for texts in sides]
        with reference_context(peft_model, kind):
            start = [reply_logps(peft_model, tokenizer, prompts, texts) for texts in sides]
        return pair_scores(policy[0], policy[1], start[0], start[1])
    finally:
        peft_model.train(training)
