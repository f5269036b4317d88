"""Batched generation with left padding, shared by predict, chat, the demo, SDE, RLHF and the server."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import torch

from llm_tuning.config import check_positive, check_range, option


@dataclass
class GenerationOptions:
    max_new_tokens: int = option(256, "longest reply in tokens", aliases=("max_tokens",))
    do_sample: bool = option(False, "sample instead of greedy decoding")
    temperature: float = option(1.0, "sampling temperature (with --do_sample)")
    top_p: float = option(1.0, "nucleus sampling mass (with --do_sample)")
    top_k: int = option(50, "sample among the k likeliest tokens (with --do_sample)")
    repetition_penalty: float = option(1.0, "> 1 discourages repeating tokens")

    def __post_init__(self) -> None:
        check_positive("max_new_tokens", self.max_new_tokens)
        check_positive("temperature", self.temperature)
        check_range("top_p", self.top_p, 0, 1, low_open=True)
        check_positive("top_k", self.top_k, allow_zero=True)
        check_positive("repetition_penalty", self.repetition_penalty)


@dataclass
class Generated:
    text: str
    new_tokens: int
    prompt_tokens: int


def generation_kwargs(opts: GenerationOptions, tokenizer: Any) -> dict[str, Any]:
    kwargs: dict[str, Any] = {
        "max_new_tokens": opts.max_new_tokens,
        "do_sample": opts.do_sample,
        "repetition_penalty": opts.repetition_penalty,
        "pad_token_id": tokenizer.pad_token_id,
        "eos_token_id": tokenizer.eos_token_id,
    }
    if opts.do_sample:
        kwargs.update(temperature=opts.temperature, top_p=opts.top_p, top_k=opts.top_k)
    else:  # keep a model's sampling defaults from warning about being ignored
        kwargs.update(temperature=None, top_p=None, top_k=None)
    return kwargs


@torch.inference_mode()
def generate(
    model: Any,
    tokenizer: Any,
    prompts: list[str],
    opts: GenerationOptions | None = None,
    add_special_tokens: bool = False,
    **extra: Any,
) -> list[Generated]:
    """Replies to already-rendered prompts (one batch; pad on the left so replies line up)."""
    opts = opts or GenerationOptions()
    side = tokenizer.padding_side
    tokenizer.padding_side = "left"
    try:
        batch = tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=add_special_tokens)
    finally:
        tokenizer.padding_side = side
    device = next(model.parameters()).device
    batch = {k: v.to(device) for k, v in batch.items()}
    output = model.generate(**batch, **generation_kwargs(opts, tokenizer), **extra)
    new = output[:, batch["input_ids"].shape[1] :]  # (batch, new_tokens)
    results = []
    for row, prompt_mask in zip(new, batch["attention_mask"], strict=True):
        ids = row.tolist()
        n = len(ids)
        for i, token in enumerate(ids):  # count up to and including the first EOS
            if token in _stop_ids(tokenizer):
                n = i + 1
                break
        text = tokenizer.decode(ids[:n], skip_special_tokens=True)
        results.append(Generated(text.strip(), n, int(prompt_mask.sum())))
    return results


def _stop_ids(tokenizer: Any) -> set[int]:
    eos = tokenizer.eos_token_id
    ids = set(eos) if isinstance(eos, list) else {eos}
    return (ids | {tokenizer.pad_token_id}) - {None}


def generate_all(
    model: Any, tokenizer: Any, prompts: list[str], opts: GenerationOptions, batch_size: int = 8, **kw: Any
) -> tuple[list[Generated], float]:
    """Generate for every prompt, batching prompts of similar length; returns results and seconds."""
    start = time.perf_counter()
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))  # less left padding per batch
    results: list[Generated | None] = [None] * len(prompts)
    for i in range(0, len(order), batch_size):
        chunk = order[i : i + batch_size]
        for index, result in zip(
            chunk, generate(model, tokenizer, [prompts[j] for j in chunk], opts, **kw), strict=True
        ):
            results[index] = result
    return results, time.perf_counter() - start  # type: ignore[return-value]
