"""Scores read off the model's next-token distributions, no generation: target loss and KL to the base model.

    nll = target_nll(model, tokenizer, conversations)            # [(summed NLL, tokens)] per row
    kl = next_token_kl(model, "base", "math", batches)           # mean KL(base || adapter) per row

The target loss covers the tokens `train` trains (every assistant reply and its EOS, chat template as in
training), so an eval loss equals the training loss on the same row. The KL compares two variants of one
PeftModel (the base with adapters disabled, and an adapter) position by position.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch

from llm_tuning.data.encode import IGNORE_INDEX, encode_segments
from llm_tuning.data.formats import Message
from llm_tuning.data.template import adds_bos, conversation_segments
from llm_tuning.models.adapters import use_adapter


def encode_conversations(tokenizer: Any, conversations: list[list[Message]], template: str = "chat",
                         system_prompt: str | None = None, max_length: int = 2048) -> list[tuple[list[int], list[int]]]:  # fmt: skip
    """(input_ids, labels) per conversation, masked as `train` masks them, cut to `max_length` tokens."""
    bos = tokenizer.bos_token_id if template == "none" and adds_bos(tokenizer) else None
    segments = [conversation_segments(tokenizer, m, template, system_prompt) for m in conversations]
    return [
        (ids[:max_length], labels[:max_length])
        for ids, labels in encode_segments(tokenizer, segments, bos_id=bos)
    ]


def padded_batches(
    encoded: list[tuple[list[int], list[int]]], batch_size: int, pad_id: int
) -> Iterator[tuple[list[int], dict[str, torch.Tensor]]]:
    """(row indices, right-padded batch) over `encoded`, rows of similar length together."""
    order = sorted(range(len(encoded)), key=lambda i: len(encoded[i][0]))
    for start in range(0, len(order), batch_size):
        chunk = order[start : start + batch_size]
        width = max(len(encoded[i][0]) for i in chunk)
        ids = torch.full((len(chunk), width), pad_id, dtype=torch.long)
        labels = torch.full((len(chunk), width), IGNORE_INDEX, dtype=torch.long)
        mask = torch.zeros((len(chunk), width), dtype=torch.long)
        for row, i in enumerate(chunk):
            n = len(encoded[i][0])
            ids[row, :n] = torch.tensor(encoded[i][0])
            labels[row, :n] = torch.tensor(encoded[i][1])
            mask[row, :n] = 1
        yield chunk, {"input_ids": ids, "labels": labels, "attention_mask": mask}


def _device(model: Any) -> torch.device:
    return next(model.parameters()).device


@torch.inference_mode()
def target_nll(model: Any, encoded: list[tuple[list[int], list[int]]], pad_id: int,
               batch_size: int = 8) -> list[tuple[float, int]]:  # fmt: skip
    """(summed negative log-likelihood, number of target tokens) per row, in input order."""
    out: list[tuple[float, int]] = [(0.0, 0)] * len(encoded)
    device = _device(model)
    for chunk, batch in padded_batches(encoded, batch_size, pad_id):
        logits = model(
            input_ids=batch["input_ids"].to(device), attention_mask=batch["attention_mask"].to(device)
        ).logits
        labels = batch["labels"][:, 1:].to(device)  # token t is predicted at position t - 1
        logprobs = torch.log_softmax(logits[:, :-1].float(), dim=-1)  # (batch, seq - 1, vocab)
        picked = logprobs.gather(-1, labels.clamp(min=0).unsqueeze(-1)).squeeze(-1)
        trained = labels != IGNORE_INDEX
        nll = -(picked * trained).sum(dim=1)
        for row, i in enumerate(chunk):
            out[i] = (float(nll[row]), int(trained[row].sum()))
    return out


@torch.inference_mode()
def next_token_kl(model: Any, reference: str, variant: str, encoded: list[tuple[list[int], list[int]]],
                  pad_id: int, batch_size: int = 8) -> list[float]:  # fmt: skip
    """Mean KL(reference || variant) of the next-token distributions over each row's scored positions
    (those whose next token has a label), in input order; rows without one score 0."""
    out = [0.0] * len(encoded)
    device = _device(model)
    for chunk, batch in padded_batches(encoded, batch_size, pad_id):
        inputs = {
            "input_ids": batch["input_ids"].to(device),
            "attention_mask": batch["attention_mask"].to(device),
        }
        with use_adapter(model, reference):
            ref = torch.log_softmax(model(**inputs).logits[:, :-1].float(), dim=-1)  # (batch, seq - 1, vocab)
        with use_adapter(model, variant):
            var = torch.log_softmax(model(**inputs).logits[:, :-1].float(), dim=-1)
        kl = (ref.exp() * (ref - var)).sum(-1).clamp(min=0)  # (batch, seq - 1); clamp rounding below 0
        scored = (batch["labels"][:, 1:] != IGNORE_INDEX).to(device)
        per_row = (kl * scored).sum(1) / scored.sum(1).clamp(min=1)
        for row, i in enumerate(chunk):
            out[i] = float(per_row[row])
    return out
