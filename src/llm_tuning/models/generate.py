"""Batched generation shared by predict, compare, the demo, SDE and RLHF: the batch engine
(llm_tuning.models.batch_engine), or `model.generate` over left-padded batches where it cannot run."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

import torch

from llm_tuning.config import option
from llm_tuning.models.batch_engine import BatchDecoder, GenRequest, UnsupportedModel, decode_all

logger = logging.getLogger(__name__)


@dataclass
class GenerationOptions:
    max_new_tokens: int = option(256, "longest reply in tokens", aliases=("max_tokens",))
    do_sample: bool = option(False, "sample instead of greedy decoding")
    temperature: float = option(1.0, "sampling temperature (with --do_sample)")
    top_p: float = option(1.0, "nucleus sampling mass (with --do_sample)")
    top_k: int = option(50, "sample among the k likeliest tokens (with --do_sample)")
    repetition_penalty: float = option(1.0, "> 1 discourages repeating tokens")


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
    """Generate for every prompt with the batch engine (at most `batch_size` rows at once, shortest prompts
    first, finished rows leave and waiting ones join); returns results in prompt order and seconds."""
    start = time.perf_counter()
    try:
        results = _engine_generate(model, tokenizer, prompts, opts, batch_size, **kw)
    except UnsupportedModel as err:
        logger.info("%s: generating batch by batch with model.generate", err)
        return generate_batches(model, tokenizer, prompts, opts, batch_size, **kw)
    return results, time.perf_counter() - start


def _engine_generate(
    model: Any, tokenizer: Any, prompts: list[str], opts: GenerationOptions, batch_size: int,
    add_special_tokens: bool = False,
) -> list[Generated]:  # fmt: skip
    ids = [tokenizer(p, add_special_tokens=add_special_tokens).input_ids for p in prompts]
    order = sorted(range(len(prompts)), key=lambda i: len(ids[i]))  # less padding in the running batch
    sampling = (
        {"temperature": opts.temperature, "top_p": opts.top_p, "top_k": opts.top_k} if opts.do_sample else {}
    )
    requests = [GenRequest(ids[i], None, opts.max_new_tokens, repetition_penalty=opts.repetition_penalty,
                           **sampling) for i in order]  # fmt: skip
    decoded = decode_all(BatchDecoder(model, _stop_ids(tokenizer)), requests, batch_size)
    results: list[Generated | None] = [None] * len(prompts)
    for i, out in zip(order, decoded, strict=True):
        text = tokenizer.decode(out.tokens, skip_special_tokens=True)
        results[i] = Generated(text.strip(), len(out.tokens), len(ids[i]))
    return results  # type: ignore[return-value]


def generate_batches(
    model: Any, tokenizer: Any, prompts: list[str], opts: GenerationOptions, batch_size: int = 8, **kw: Any
) -> tuple[list[Generated], float]:
    """The plain way: `model.generate` over fixed batches of similar length (for models the engine cannot run,
    and as the baseline of bench/predict_speed.py)."""
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
