"""Grouped-query attention over several new tokens per row, without copying the cache: the batch engine's
draft checks.

    with packed_gqa():                       # in this thread only, for as long as the block runs
        model(input_ids=last_and_drafts, attention_mask=mask, cache=cache, ...)   # (batch, 1 + draft)

Models with fewer key/value heads than query heads (Llama 3, Qwen2, SmolLM2: grouped-query attention) run
transformers' SDPA attention; for a forward of more than one new token under an attention mask (the engine's
left-padded rows checking their drafts) it repeats every key/value head once per query head it serves
(`repeat_kv`): a copy of the whole cache in every layer, every forward. Inside `packed_gqa` the query heads
that share a key/value head are stacked as extra query rows instead (what transformers itself does for a
single new token), so attention reads each key/value head once and copies nothing. On the embedded model
(8 rows, 300 cached tokens, interleaved medians) a forward of 2 tokens per row cost 1.16x one of 1 token this
way, 1.40x with the copies; 4 tokens per row 1.51x against 1.81x (bench/README.md). Outputs equal
transformers' up to float rounding (tested).

Only the "sdpa" attention is changed, only while some thread is inside `packed_gqa`, and only for the
thread inside it; every other case (one new token, no mask, no grouped heads, dropout, position biases,
soft-capping, attention sinks) goes to the function that was registered before.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import torch
import torch.nn.functional as F

_lock = threading.Lock()
_inside = threading.local()  # .active: this thread is inside packed_gqa
_users = 0  # threads inside packed_gqa; the registry entry is ours while > 0
_previous: Callable | None = None  # the "sdpa" function registered before ours

UNPACKABLE_KWARGS = ("position_bias", "softcap", "s_aux", "sinks")  # attention terms the packing would drop


def _packable(module: Any, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
              mask: torch.Tensor | None, kwargs: dict[str, Any]) -> bool:  # fmt: skip
    heads, kv_heads = query.shape[1], key.shape[1]
    return (
        getattr(_inside, "active", False)
        and query.shape[2] > 1
        and mask is not None
        and mask.dim() == 4
        and mask.shape[1] == 1  # one mask for every head
        and kv_heads < heads
        and heads % kv_heads == 0
        and query.shape[-1] == key.shape[-1] == value.shape[-1]
        and not getattr(module, "training", False)
        and not kwargs.get("dropout")
        and all(kwargs.get(name) is None for name in UNPACKABLE_KWARGS)
    )


def _packed_sdpa(module: Any, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                 attention_mask: torch.Tensor | None, *args: Any, **kwargs: Any) -> tuple[torch.Tensor, None]:  # fmt: skip
    """transformers' attention-function signature: query (batch, heads, new, dim), key / value (batch,
    kv_heads, length, dim); returns (batch, new, heads, dim) and no weights."""
    if args or not _packable(module, query, key, value, attention_mask, kwargs):
        return _previous(module, query, key, value, attention_mask, *args, **kwargs)  # type: ignore[misc]
    batch, heads, new, dim = query.shape
    groups = heads // key.shape[1]
    # query head h reads key/value head h // groups (as repeat_kv pairs them): stack each group's heads as rows
    rows = query.reshape(batch, key.shape[1], groups * new, dim)
    mask = attention_mask.expand(batch, 1, new, attention_mask.shape[-1]).repeat(1, 1, groups, 1)
    out = F.scaled_dot_product_attention(rows, key, value, attn_mask=mask, scale=kwargs.get("scaling"))
    return out.reshape(batch, heads, new, dim).transpose(1, 2).contiguous(), None


@contextmanager
def packed_gqa() -> Iterator[None]:
    """While in it, this thread's multi-token forwards under a mask attend without repeating key/value heads."""
    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

    global _users, _previous
    with _lock:
        if _users == 0:
            _previous = ALL_ATTENTION_FUNCTIONS["sdpa"]
            ALL_ATTENTION_FUNCTIONS["sdpa"] = _packed_sdpa
        _users += 1
    was_active, _inside.active = getattr(_inside, "active", False), True
    try:
        yield
    finally:
        _inside.active = was_active
        with _lock:
            _users -= 1
            if _users == 0:
                # someone who registered their own since keeps it
                if ALL_ATTENTION_FUNCTIONS["sdpa"] is _packed_sdpa:
                    del ALL_ATTENTION_FUNCTIONS["sdpa"]  # drops our override of transformers' own function
                    if ALL_ATTENTION_FUNCTIONS["sdpa"] is not _previous:
                        ALL_ATTENTION_FUNCTIONS["sdpa"] = _previous  # an override that was there before ours
                _previous = None
