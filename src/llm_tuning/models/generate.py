"""Batched generation shared by predict, compare, chat, the demo, SDE and RLHF: the batch engine
(llm_tuning.models.batch_engine), or `model.generate` over left-padded batches where it cannot run.

    llm-tuning predict --model chatglm2-folder --trust_remote_code --data_path test.jsonl

Remote-code models written for transformers 4 can break `generate` under transformers 5 (ChatGLM2 calls
the removed `_extract_past_from_model_output`). They skip the engine (their forward's cache handling is
their own), and where their `generate` fails, generation falls back, with a log line, to a plain decode loop
of ours (`decode_loop`): greedy or sampled, one row at a time, no KV cache.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

import torch

from llm_tuning.config import check_positive, check_range, option
from llm_tuning.models.batch_engine import PEFT_BASE, BatchDecoder, GenRequest, UnsupportedModel, decode_all

logger = logging.getLogger(__name__)
OWN_DECODE = "_llm_tuning_own_decode"  # set on a model whose generate() failed once


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
    output = _generate_ids(model, tokenizer, batch, opts, extra)
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


def runs_remote_code(model: Any) -> bool:
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return type(base).__module__.startswith("transformers_modules")


def _generate_ids(
    model: Any, tokenizer: Any, batch: dict, opts: GenerationOptions, extra: dict
) -> torch.Tensor:
    """model.generate, or our decode loop for remote code whose generate fails under this transformers."""
    if not getattr(model, OWN_DECODE, False):
        try:
            return model.generate(**batch, **generation_kwargs(opts, tokenizer), **extra)
        except (AttributeError, TypeError, NotImplementedError, KeyError, IndexError, ValueError) as err:
            if not runs_remote_code(model):
                raise
            import transformers

            logger.warning("this model's own generate() fails under transformers %s (%s: %s); using llm-tuning's "
                           "plain decode loop instead (slower: no KV cache)", transformers.__version__,
                           type(err).__name__, err)  # fmt: skip
            setattr(model, OWN_DECODE, True)
    return decode_loop(model, batch["input_ids"], batch["attention_mask"], opts, _stop_ids(tokenizer),
                       tokenizer.pad_token_id or 0)  # fmt: skip


def next_token(logits: torch.Tensor, seen: torch.Tensor, opts: GenerationOptions) -> int:
    """One token from (vocab,) logits: repetition penalty, then greedy or temperature / top-k / top-p sampling."""
    logits = logits.float().clone()
    if opts.repetition_penalty != 1.0 and len(seen):
        picked = logits[seen]
        logits[seen] = torch.where(
            picked > 0, picked / opts.repetition_penalty, picked * opts.repetition_penalty
        )
    if not opts.do_sample:
        return int(logits.argmax())
    logits = logits / max(opts.temperature, 1e-5)
    if 0 < opts.top_k < logits.numel():
        logits[logits < logits.topk(opts.top_k).values[-1]] = float("-inf")
    probs = torch.softmax(logits, -1)
    if opts.top_p < 1.0:
        ordered, order = probs.sort(descending=True)
        drop = ordered.cumsum(0) - ordered > opts.top_p  # keep the smallest set reaching top_p
        probs[order[drop]] = 0.0
    return int(torch.multinomial(probs / probs.sum(), 1))


@torch.inference_mode()
def decode_loop(model: Any, input_ids: torch.Tensor, attention_mask: torch.Tensor, opts: GenerationOptions,
                stop_ids: set[int], pad_id: int) -> torch.Tensor:  # fmt: skip
    """(batch, prompt + new) ids like `generate` returns, decoded row by row with full forwards (no cache, no
    padding inside the model, so a remote model's own position and mask handling is never involved)."""
    replies = []
    for ids, mask in zip(input_ids, attention_mask, strict=True):
        current = ids[mask.bool()]  # the prompt without its left padding
        new: list[int] = []
        for _ in range(opts.max_new_tokens):
            logits = model(input_ids=current[None]).logits[0, -1]  # (vocab,)
            token = next_token(logits, current, opts)
            new.append(token)
            current = torch.cat([current, current.new_tensor([token])])
            if token in stop_ids:
                break
        replies.append(new)
    width = max((len(r) for r in replies), default=0)
    padded = [r + [pad_id] * (width - len(r)) for r in replies]
    return torch.cat([input_ids, input_ids.new_tensor(padded).view(len(replies), width)], dim=1)


def _stop_ids(tokenizer: Any) -> set[int]:
    eos = tokenizer.eos_token_id
    ids = set(eos) if isinstance(eos, list) else {eos}
    return (ids | {tokenizer.pad_token_id}) - {None}


def generate_all(
    model: Any, tokenizer: Any, prompts: list[str], opts: GenerationOptions, batch_size: int = 8,
    adapters: list[Any] | None = None, lookahead: int = 4, **kw: Any,
) -> tuple[list[Generated], float]:  # fmt: skip
    """Generate for every prompt with the batch engine (at most `batch_size` rows at once, shortest prompts
    first, finished rows leave and waiting ones join); returns results in prompt order and seconds.

    `adapters`, one per prompt, picks what answers each row: None (the model as it is set up), "base", an
    adapter's name, or a per-request mix (a ((adapter, weight), ...) tuple or a name given to add_row_mix).
    `lookahead`: the longest prompt-lookup draft greedy rows check per step in small batches (0: none)."""
    start = time.perf_counter()
    if runs_remote_code(model):
        return _by_adapter(model, tokenizer, prompts, opts, batch_size, adapters, **kw)
    try:
        rows = [_engine_adapter(model, a) for a in adapters] if adapters else None
        results = _engine_generate(model, tokenizer, prompts, opts, batch_size, rows, lookahead, **kw)
    except UnsupportedModel as err:
        logger.info("%s: generating batch by batch with model.generate", err)
        return _by_adapter(model, tokenizer, prompts, opts, batch_size, adapters, **kw)
    return results, time.perf_counter() - start


def _engine_adapter(model: Any, name: Any) -> Any:
    """A GenRequest.adapter for what `generate_all`'s `adapters` names."""
    from llm_tuning.models.adapters import BASE, row_mix_named

    mix = row_mix_named(model, name)
    return mix if mix is not None else PEFT_BASE if name == BASE else name


def _by_adapter(model: Any, tokenizer: Any, prompts: list[str], opts: GenerationOptions, batch_size: int,
                adapters: list[Any] | None, **kw: Any) -> tuple[list[Generated], float]:  # fmt: skip
    """`generate_batches` once per distinct adapter (or mix) the rows name, under `use_adapter`."""
    if not adapters or all(a is None for a in adapters):
        return generate_batches(model, tokenizer, prompts, opts, batch_size, **kw)
    from llm_tuning.models.adapters import use_adapter

    start = time.perf_counter()
    results: list[Generated | None] = [None] * len(prompts)
    for adapter in dict.fromkeys(adapters):
        rows = [i for i, a in enumerate(adapters) if a == adapter]
        with use_adapter(model, adapter):
            done, _ = generate_batches(model, tokenizer, [prompts[i] for i in rows], opts, batch_size, **kw)
        for i, result in zip(rows, done, strict=True):
            results[i] = result
    return results, time.perf_counter() - start  # type: ignore[return-value]


def _engine_generate(
    model: Any, tokenizer: Any, prompts: list[str], opts: GenerationOptions, batch_size: int,
    adapters: list[Any] | None = None, lookahead: int = 4, add_special_tokens: bool = False,
    **generate_kwargs: Any,
) -> list[Generated]:  # fmt: skip
    """The engine's way; `generate_kwargs` (e.g. use_cache) are for model.generate, which it does not call."""
    ids = [tokenizer(p, add_special_tokens=add_special_tokens).input_ids for p in prompts]
    order = sorted(range(len(prompts)), key=lambda i: len(ids[i]))  # less padding in the running batch
    sampling = (
        {"temperature": opts.temperature, "top_p": opts.top_p, "top_k": opts.top_k} if opts.do_sample else {}
    )
    requests = [GenRequest(ids[i], adapters[i] if adapters else None, opts.max_new_tokens,
                           repetition_penalty=opts.repetition_penalty, **sampling) for i in order]  # fmt: skip
    decoder = BatchDecoder(model, _stop_ids(tokenizer), lookahead)
    decoded = decode_all(decoder, requests, batch_size)
    if decoder.drafted:
        logger.debug("lookahead kept %d of %d draft tokens", decoder.accepted, decoder.drafted)
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
