"""Continuous batching over one KV cache: rows of different adapters and sampling settings share every forward.

    decoder = BatchDecoder(model, stop_ids={eos})
    outputs = decode_all(decoder, [GenRequest(ids, adapter="math"), GenRequest(ids2, temperature=0.7, seed=1)], 8)

Each row carries its own adapter (PEFT's mixed-adapter batches: `adapter_names`, "__base__" = no adapter)
and its own sampling settings (temperature, top_k, top_p, repetition penalty, a seeded generator of its own,
max_new_tokens, stop ids, a callback that may stop it, a cancel flag). Rows are left-padded in one
DynamicCache with an attention mask and explicit position ids; a finished row leaves the batch at the next
step, and new rows join at step boundaries: they are prefilled on their own, then their cache is merged into
the running one by left-padding both to a common length. Greedy rows give the same tokens as a one-row
`model.generate` for the same adapter (tests/models/test_batch_engine.py).

Seeded sampling draws from the row's own generator, so its tokens do not depend on what else shares the
batch, up to float rounding of the logits (a different batch shape may change the last bits).
"""

from __future__ import annotations

import inspect
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import torch

from llm_tuning.models.row_mix import Mix, mix_hooks

PEFT_BASE = "__base__"  # PEFT's adapter name for "no adapter" in a mixed batch
GREEDY_BELOW = 1e-5  # a temperature under this decodes greedily


class UnsupportedModel(RuntimeError):
    """The model's cache is not a plain per-layer key/value cache the engine can merge and split."""


@dataclass
class GenRequest:
    input_ids: list[int]
    # a loaded PEFT adapter, "__base__" for none, None: the model as it is set up; or a per-row mix:
    # ((adapter, weight), ...), the weighted sum of those adapters' LoRA outputs (what a `cat` mix computes)
    adapter: str | Mix | None = None
    max_new_tokens: int = 256
    temperature: float = 0.0  # < GREEDY_BELOW: greedy
    top_p: float = 1.0
    top_k: int = 0  # 0: no top-k cut
    repetition_penalty: float = 1.0
    seed: int | None = None
    on_token: Callable[[int], bool] | None = None  # called in the decode thread; True stops the row
    cancel: threading.Event | None = None  # set from anywhere: the row leaves at the next step


@dataclass
class GenResult:
    tokens: list[int]  # generated ids, the stop id included when one ended the row
    finish_reason: str  # "stop" (stop id or on_token), "length", "cancelled"


@dataclass
class _Row:
    key: Any
    req: GenRequest
    generator: torch.Generator | None
    tokens: list[int] = field(default_factory=list)
    seen: torch.Tensor | None = None  # prompt + generated ids, for the repetition penalty


def _sample(logits: torch.Tensor, row: _Row) -> int:
    """One token for one row from its (vocab,) float logits, as transformers orders its processors."""
    req = row.req
    if req.repetition_penalty != 1.0 and row.seen is not None:
        picked = logits[row.seen]
        logits[row.seen] = torch.where(
            picked < 0, picked * req.repetition_penalty, picked / req.repetition_penalty
        )
    if req.temperature < GREEDY_BELOW:
        return int(logits.argmax())
    logits = logits / req.temperature
    if 0 < req.top_k < logits.shape[-1]:
        cut = torch.topk(logits, req.top_k).values[-1]
        logits = logits.masked_fill(logits < cut, float("-inf"))
    if req.top_p < 1.0:
        sorted_logits, order = torch.sort(logits, descending=False)
        cumulative = sorted_logits.softmax(-1).cumsum(-1)
        drop = cumulative <= 1 - req.top_p
        drop[-1] = False  # keep at least the likeliest token
        logits = logits.masked_fill(torch.zeros_like(drop).scatter(0, order, drop), float("-inf"))
    probs = logits.softmax(-1)
    return int(torch.multinomial(probs, 1, generator=row.generator))


def _left_pad(t: torch.Tensor, length: int, dim: int) -> torch.Tensor:
    missing = length - t.shape[dim]
    if missing <= 0:
        return t
    shape = list(t.shape)
    shape[dim] = missing
    return torch.cat([t.new_zeros(shape), t], dim=dim)


class BatchDecoder:
    """The running batch: rows, their cache, attention mask, next positions and last logits."""

    def __init__(self, model: Any, stop_ids: Iterable[int]) -> None:
        self.model = model
        self.stop_ids = set(stop_ids)
        self.peft = hasattr(model, "peft_config")
        self.device = next(model.parameters()).device
        base = model.get_base_model() if self.peft else model
        params = inspect.signature(base.forward).parameters
        self.keep_logits = "logits_to_keep" in params
        if "position_ids" not in params:
            raise UnsupportedModel(
                f"{type(base).__name__}.forward takes no position_ids; batched decoding needs them"
            )
        # transformers 5 renames past_key_values to cache (the old name warns); remote code keeps the old one
        self.cache_arg = "cache" if "cache" in params else "past_key_values"
        self.rows: list[_Row] = []
        self.cache: Any = None
        self.mask: torch.Tensor | None = None  # (batch, cache length)
        self.next_pos: torch.Tensor | None = None  # (batch,)
        self.logits: torch.Tensor | None = None  # (batch, vocab): what the next token is sampled from

    def _current(self) -> str:
        """The adapter the model runs when none is named (its active one, or none inside disable_adapter)."""
        from peft.tuners.tuners_utils import BaseTunerLayer

        layer = next(m for m in self.model.modules() if isinstance(m, BaseTunerLayer))
        if layer.disable_adapters:
            return PEFT_BASE
        if len(layer.active_adapters) != 1:
            raise UnsupportedModel(
                f"{len(layer.active_adapters)} adapters are active at once; name one per row"
            )
        return layer.active_adapters[0]

    def __len__(self) -> int:
        return len(self.rows)

    def _forward(
        self, ids: torch.Tensor, mask: torch.Tensor, pos: torch.Tensor, cache: Any, adapters: list[Any]
    ) -> tuple[Any, torch.Tensor]:
        kwargs: dict[str, Any] = {"logits_to_keep": 1} if self.keep_logits else {}
        mixes = {i: a for i, a in enumerate(adapters) if isinstance(a, tuple)}
        if self.peft and any(a is not None for a in adapters):
            current = self._current()
            if current == PEFT_BASE and any(a not in (None, PEFT_BASE) for a in adapters):
                # PEFT ignores adapter_names inside disable_adapter(): the rows would silently get the base model
                raise RuntimeError("rows name adapters while the model's adapters are disabled")
            kwargs["adapter_names"] = [
                PEFT_BASE if i in mixes else a or current for i, a in enumerate(adapters)
            ]
        kwargs[self.cache_arg] = cache
        groups: dict[Mix, list[int]] = {}
        for row, mix in mixes.items():
            groups.setdefault(mix, []).append(row)
        with mix_hooks(self.model, [(rows, mix) for mix, rows in groups.items()]):
            out = self.model(input_ids=ids, attention_mask=mask, position_ids=pos, use_cache=True, **kwargs)
        cache = getattr(out, "cache", None)
        cache = getattr(out, "past_key_values", None) if cache is None else cache
        if cache is None:  # GPT-1, XLM, RecurrentGemma: no key/value cache comes back
            raise UnsupportedModel(f"{type(self.model).__name__} returns no key/value cache; batched decoding "
                                   "needs one")  # fmt: skip
        return cache, out.logits[:, -1, :].float()  # (batch, vocab)

    @torch.inference_mode()
    def add(self, items: list[tuple[Any, GenRequest]]) -> None:
        """Prefill new rows (left-padded among themselves) and merge them into the running batch."""
        if not items:
            return
        length = max(len(req.input_ids) for _, req in items)
        ids = torch.zeros((len(items), length), dtype=torch.long)
        mask = torch.zeros((len(items), length), dtype=torch.long)
        for i, (_, req) in enumerate(items):
            ids[i, length - len(req.input_ids) :] = torch.tensor(req.input_ids)
            mask[i, length - len(req.input_ids) :] = 1
        ids, mask = ids.to(self.device), mask.to(self.device)
        pos = (mask.cumsum(-1) - 1).clamp(min=0)
        cache, logits = self._forward(ids, mask, pos, None, [req.adapter for _, req in items])
        self._check_cache(cache)
        rows = []
        for key, req in items:
            seed = req.seed if req.seed is not None else int(torch.randint(0, 2**62, (1,)))
            generator = (
                None if req.temperature < GREEDY_BELOW else torch.Generator(self.device).manual_seed(seed)
            )
            seen = torch.tensor(req.input_ids, device=self.device) if req.repetition_penalty != 1.0 else None
            rows.append(_Row(key, req, generator, seen=seen))
        self._merge(rows, cache, mask, mask.sum(-1), logits)

    def _check_cache(self, cache: Any) -> None:
        from transformers.cache_utils import DynamicLayer

        layers = getattr(cache, "layers", None)
        if not layers or any(type(layer) is not DynamicLayer for layer in layers):
            raise UnsupportedModel(f"{type(self.model).__name__}: its cache ({type(cache).__name__}) is not a plain "
                                   "key/value cache; batched decoding needs one")  # fmt: skip

    def _merge(
        self, rows: list[_Row], cache: Any, mask: torch.Tensor, pos: torch.Tensor, logits: torch.Tensor
    ) -> None:
        if self.cache is None:
            self.rows, self.cache, self.mask, self.next_pos, self.logits = rows, cache, mask, pos, logits
            return
        length = max(self.mask.shape[1], mask.shape[1])
        for old, new in zip(self.cache.layers, cache.layers, strict=True):
            old.keys = torch.cat([_left_pad(old.keys, length, 2), _left_pad(new.keys, length, 2)])
            old.values = torch.cat([_left_pad(old.values, length, 2), _left_pad(new.values, length, 2)])
        self.mask = torch.cat([_left_pad(self.mask, length, 1), _left_pad(mask, length, 1)])
        self.next_pos = torch.cat([self.next_pos, pos])
        self.logits = torch.cat([self.logits, logits])
        self.rows += rows

    def clear(self) -> None:
        """Drop every row (after a failed forward, whose cache may be half-updated)."""
        self._keep([])

    def _keep(self, keep: list[int]) -> None:
        """Keep only these rows; drop the cache columns that are padding in every row left."""
        if not keep:
            self.rows, self.cache, self.mask, self.next_pos, self.logits = [], None, None, None, None
            return
        if len(keep) == len(self.rows):
            return
        index = torch.tensor(keep, device=self.device)
        mask = self.mask[index]
        start = int((mask.cumsum(-1) == 0).sum(-1).min())  # leading all-padding columns
        for layer in self.cache.layers:
            layer.keys = layer.keys[index, :, start:]
            layer.values = layer.values[index, :, start:]
        self.rows = [self.rows[i] for i in keep]
        self.mask, self.next_pos, self.logits = mask[:, start:], self.next_pos[index], self.logits[index]

    def _finish(self, row: _Row, token: int) -> str | None:
        req = row.req
        stopped = req.on_token(token) if req.on_token else False
        if token in self.stop_ids or stopped:
            return "stop"
        return "length" if len(row.tokens) >= req.max_new_tokens else None

    @torch.inference_mode()
    def step(self) -> list[tuple[Any, GenResult]]:
        """Sample one token per row, let finished (and cancelled) rows leave, run one forward for the rest."""
        done: list[tuple[Any, GenResult]] = []
        keep, new_tokens = [], []
        for i, row in enumerate(self.rows):
            if row.req.cancel is not None and row.req.cancel.is_set():
                done.append((row.key, GenResult(row.tokens, "cancelled")))
                continue
            token = _sample(self.logits[i], row)
            row.tokens.append(token)
            if row.seen is not None:
                row.seen = torch.cat([row.seen, row.seen.new_tensor([token])])
            reason = self._finish(row, token)
            if reason:
                done.append((row.key, GenResult(row.tokens, reason)))
            else:
                keep.append(i)
                new_tokens.append(token)
        self._keep(keep)
        if self.rows:
            ids = torch.tensor(new_tokens, device=self.device).unsqueeze(1)  # (batch, 1)
            self.mask = torch.cat([self.mask, self.mask.new_ones((len(self.rows), 1))], dim=1)
            self.cache, self.logits = self._forward(ids, self.mask, self.next_pos.unsqueeze(1), self.cache,
                                                    [r.req.adapter for r in self.rows])  # fmt: skip
            self.next_pos = self.next_pos + 1
        return done


def decode_all(decoder: BatchDecoder, requests: list[GenRequest], max_batch: int) -> list[GenResult]:
    """Every request's result, in order; at most `max_batch` rows decode together, new ones join as others end."""
    results: list[GenResult | None] = [None] * len(requests)
    waiting = list(range(len(requests)))[::-1]  # pop() takes them in the given order
    while waiting or len(decoder):
        room = max_batch - len(decoder)
        if room > 0 and waiting:
            decoder.add([(i, requests[i]) for i in (waiting.pop() for _ in range(min(room, len(waiting))))])
        for key, result in decoder.step():
            results[key] = result
    return results  # type: ignore[return-value]
