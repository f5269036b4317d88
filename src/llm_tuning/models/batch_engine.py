"""Continuous batching over one KV cache: rows of different adapters and sampling settings share every forward.

    decoder = BatchDecoder(model, stop_ids={eos})
    outputs = decode_all(decoder, [GenRequest(ids, adapter="math"), GenRequest(ids2, temperature=0.7, seed=1)], 8)

Each row carries its own adapter (PEFT's mixed-adapter batches: `adapter_names`, "__base__" = no adapter)
and its own sampling settings (temperature, top_k, top_p, repetition penalty, a seeded generator of its own,
max_new_tokens, stop ids, a callback that may stop it, a cancel flag). Rows are left-padded in one
DynamicCache (of GrowingLayers, models/kv_cache.py: no copy of the whole cache per token) with an attention
mask and explicit position ids; a finished row leaves the batch at the next step, and new rows join at
step boundaries: they are prefilled on their own, then their cache is merged into the running one by
left-padding both to a common length. Greedy rows give the same tokens as a one-row
`model.generate` for the same adapter (tests/models/test_batch_engine.py).

While the batch is small (rows x (draft + 1) <= 32 tokens by default: 8 rows check 3 draft tokens each),
greedy rows also check a prompt-lookup draft of up to 4 tokens in the same forward (models/lookahead.py): the
tokens greedy decoding would produce anyway are kept, several per step, and the rest are shifted off the
row's cache; outputs are unchanged. Multi-token forwards attend without copying the cache per query head
(models/gqa_attention.py). Drafts longer than one token pay only when most draft tokens are right: while
fewer than LONG_DRAFTS_FROM of the recent first draft tokens were kept, drafts are one token long; while
fewer than DRAFTS_FROM, only every PROBE_EVERY-th step checks one.

Seeded sampling draws from the row's own generator, so its tokens do not depend on what else shares the
batch, up to float rounding of the logits (a different batch shape may change the last bits).
"""

from __future__ import annotations

import inspect
import threading
from collections.abc import Callable, Iterable
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Any

import torch

from llm_tuning.models.cpu_linear import linears_on_cpu, rows_first
from llm_tuning.models.gqa_attention import packed_gqa
from llm_tuning.models.kv_cache import grow_in_place
from llm_tuning.models.lookahead import accepted, find_draft, shift_right
from llm_tuning.models.row_mix import Mix, mix_hooks

PEFT_BASE = "__base__"  # PEFT's adapter name for "no adapter" in a mixed batch
GREEDY_BELOW = 1e-5  # a temperature under this decodes greedily
# the share of first draft tokens kept (recent steps) from which longer drafts pay: on the embedded model a
# forward of 8 rows x 2 tokens cost 1.16x one of 8 x 1, 8 x 4 cost 1.51x (bench/README.md); with a share p
# of draft tokens kept, 3 draft tokens give 1 + p + p^2 + p^3 tokens a step against 1 + p for one
LONG_DRAFTS_FROM = 0.55
# below this share one-token drafts cost more than they save (1 + p tokens for 1.16x a step): drafts are then
# checked only every PROBE_EVERY steps, to notice when they start being right again
DRAFTS_FROM, PROBE_EVERY = 0.25, 8


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

    def __init__(
        self, model: Any, stop_ids: Iterable[int], lookahead: int = 4, lookahead_tokens: int = 32
    ) -> None:
        self.model = model
        self.stop_ids = set(stop_ids)
        # prompt-lookup drafts (models/lookahead.py) of up to `lookahead` tokens for greedy rows, while
        # rows x (draft + 1) <= lookahead_tokens: a small batch, where a forward costs about the same for a
        # few more tokens; 0 turns drafting off
        self.lookahead, self.lookahead_tokens = lookahead, lookahead_tokens
        self.drafted = self.accepted = 0  # draft tokens checked / kept (how much lookahead saved)
        self.first_kept = 0.5  # moving average of the share of rows whose first draft token was kept
        self.draft_steps = 0  # steps that could have checked drafts
        self.peft = hasattr(model, "peft_config")
        self.device = next(model.parameters()).device
        self.linears = linears_on_cpu(model)  # decode steps run them as W @ x^T (models/cpu_linear.py)
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
        self,
        ids: torch.Tensor,
        mask: torch.Tensor,
        pos: torch.Tensor,
        cache: Any,
        adapters: list[Any],
        keep: int = 1,
    ) -> tuple[Any, torch.Tensor]:
        """(cache, logits of the last position (batch, vocab), or of the last `keep` (batch, keep, vocab))."""
        kwargs: dict[str, Any] = {"logits_to_keep": keep} if self.keep_logits else {}
        mixes = {i: a for i, a in enumerate(adapters) if isinstance(a, tuple)}
        if self.peft and any(a is not None for a in adapters):
            current = self._current()
            if current == PEFT_BASE and any(a not in (None, PEFT_BASE) for a in adapters):
                # PEFT ignores adapter_names inside disable_adapter(): the rows would silently get the base model
                raise RuntimeError("rows name adapters while the model's adapters are disabled")
            names = [PEFT_BASE if i in mixes else a or current for i, a in enumerate(adapters)]
            if any(n != current for n in names):  # all rows on the active adapter: PEFT's plain (faster) path
                kwargs["adapter_names"] = names
        kwargs[self.cache_arg] = cache
        groups: dict[Mix, list[int]] = {}
        for row, mix in mixes.items():
            groups.setdefault(mix, []).append(row)
        drafts = packed_gqa() if cache is not None and ids.shape[1] > 1 else nullcontext()
        with (
            mix_hooks(self.model, [(rows, mix) for mix, rows in groups.items()]),
            rows_first(self.linears),
            drafts,
        ):
            out = self.model(input_ids=ids, attention_mask=mask, position_ids=pos, use_cache=True, **kwargs)
        cache = getattr(out, "cache", None)
        cache = getattr(out, "past_key_values", None) if cache is None else cache
        if cache is None:  # GPT-1, XLM, RecurrentGemma: no key/value cache comes back
            raise UnsupportedModel(f"{type(self.model).__name__} returns no key/value cache; batched decoding "
                                   "needs one")  # fmt: skip
        logits = out.logits[:, -keep:, :].float()  # (batch, keep, vocab)
        return cache, logits[:, 0] if keep == 1 else logits

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
        grow_in_place(cache)
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
        for layer in self.cache.layers:
            layer.keys, layer.values = layer.keys[index], layer.values[index]
        self.rows = [self.rows[i] for i in keep]
        self.mask, self.next_pos, self.logits = self.mask[index], self.next_pos[index], self.logits[index]
        self._trim()

    def _trim(self) -> None:
        """Drop the leading cache columns that are padding in every row."""
        start = int((self.mask.cumsum(-1) == 0).sum(-1).min())
        if start:
            for layer in self.cache.layers:
                layer.keys, layer.values = layer.keys[:, :, start:], layer.values[:, :, start:]
            self.mask = self.mask[:, start:]

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
        drafts = _drafts(self) if self.rows else None
        if drafts:
            done += _verify(self, new_tokens, drafts)
        elif self.rows:
            ids = torch.tensor(new_tokens, device=self.device).unsqueeze(1)  # (batch, 1)
            self.mask = torch.cat([self.mask, self.mask.new_ones((len(self.rows), 1))], dim=1)
            self.cache, self.logits = self._forward(ids, self.mask, self.next_pos.unsqueeze(1), self.cache,
                                                    [r.req.adapter for r in self.rows])  # fmt: skip
            self.next_pos = self.next_pos + 1
        return done


def _greedy_plain(req: GenRequest) -> bool:
    """Rows whose next tokens drafts can be checked against: greedy, nothing reshaping the logits."""
    return req.temperature < GREEDY_BELOW and req.repetition_penalty == 1.0


def _drafts(decoder: BatchDecoder) -> list[list[int]] | None:
    """A prompt-lookup draft per row ([] for rows that get none), or None: no row has one, or the batch is
    too large for drafts to be nearly free (rows x (draft + 1) > lookahead_tokens)."""
    length = min(decoder.lookahead, decoder.lookahead_tokens // len(decoder.rows) - 1)
    if decoder.first_kept < LONG_DRAFTS_FROM:
        length = min(length, 1)
    decoder.draft_steps += 1
    if length < 1 or (decoder.first_kept < DRAFTS_FROM and decoder.draft_steps % PROBE_EVERY):
        return None
    drafts = []
    for row in decoder.rows:
        room = row.req.max_new_tokens - len(row.tokens) - 1  # the last token comes from the model itself
        ok = _greedy_plain(row.req) and room > 0
        drafts.append(find_draft(row.req.input_ids + row.tokens, min(length, room)) if ok else [])
    return drafts if any(drafts) else None


def _verify(decoder: BatchDecoder, last: list[int], drafts: list[list[int]]) -> list[tuple[Any, GenResult]]:
    """One forward over each row's last token and its draft; keep the draft tokens greedy decoding would
    have produced (and the logits after them), drop the rest from the cache; the rows that ended."""
    width = 1 + max(len(d) for d in drafts)
    ids = torch.zeros((len(drafts), width), dtype=torch.long)
    valid = torch.zeros((len(drafts), width), dtype=torch.long)
    for r, (token, draft) in enumerate(zip(last, drafts, strict=True)):
        ids[r, : 1 + len(draft)] = torch.tensor([token, *draft])
        valid[r, : 1 + len(draft)] = 1
    ids, valid = ids.to(decoder.device), valid.to(decoder.device)
    decoder.mask = torch.cat([decoder.mask, valid], dim=1)
    pos = decoder.next_pos[:, None] + torch.arange(width, device=decoder.device)
    decoder.cache, logits = decoder._forward(ids, decoder.mask, pos, decoder.cache,
                                             [r.req.adapter for r in decoder.rows], keep=width)  # fmt: skip
    predicted = logits.argmax(-1).tolist()  # (batch, width): greedy choice after each position
    done, keep, taken = [], [], []
    for r, (row, draft) in enumerate(zip(decoder.rows, drafts, strict=True)):
        count, reason = 0, None
        for token in draft[: accepted(draft, predicted[r])]:
            row.tokens.append(token)
            count += 1
            reason = decoder._finish(row, token)
            if reason:
                done.append((row.key, GenResult(row.tokens, reason)))
                break
        if not reason:
            keep.append(r)
        taken.append(count)
    decoder.drafted += sum(len(d) for d in drafts)
    decoder.accepted += sum(taken)
    tried = sum(1 for d in drafts if d)
    decoder.first_kept = 0.8 * decoder.first_kept + 0.2 * sum(1 for t in taken if t) / tried
    counts = torch.tensor(taken, device=decoder.device)
    decoder.logits = logits[
        torch.arange(len(taken), device=decoder.device), counts
    ]  # after the last kept token
    decoder.next_pos = decoder.next_pos + 1 + counts
    shifts = width - 1 - counts  # rejected (and padding) columns sit at each row's end: move them off it
    for layer in decoder.cache.layers:
        layer.keys, layer.values = shift_right(layer.keys, shifts, 2), shift_right(layer.values, shifts, 2)
    decoder.mask = shift_right(decoder.mask, shifts, 1) * (
        torch.arange(decoder.mask.shape[1], device=decoder.device) >= shifts[:, None]
    )
    decoder._trim()
    decoder._keep(keep)
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
