"""A key/value cache for the batch engine that grows in place instead of being copied at every token.

    grow_in_place(cache)      # after the model's own prefill made a DynamicCache of plain DynamicLayers

transformers' DynamicLayer concatenates the whole cache with each new token (a copy of every layer's keys
and values per decode step). GrowingLayer keeps them in a buffer with spare columns and writes new tokens
into it; `keys` / `values` are views of the filled part, so attention reads exactly what DynamicLayer
would give it. Whatever replaces `keys` or `values` from outside (the engine's row merge, row removal,
padding trim, draft shifts) is noticed at the next update and copied into a fresh buffer once.
"""

from __future__ import annotations

from typing import Any

import torch
from transformers.cache_utils import DynamicLayer

SPARE_COLUMNS = 64  # at least this many free columns after a (re)allocation; also a quarter of the length


class GrowingLayer(DynamicLayer):
    """A DynamicLayer whose keys and values are views of buffers with free columns at the end."""

    _key_buffer: torch.Tensor | None = None
    _value_buffer: torch.Tensor | None = None

    def _owns(self, extra: int, batch: int) -> bool:
        """The current keys / values are the start of our buffers, with room for `extra` more columns."""
        keys, buffer = self.keys, self._key_buffer
        return (
            buffer is not None
            and self._value_buffer is not None
            and keys.data_ptr() == buffer.data_ptr()
            and self.values.data_ptr() == self._value_buffer.data_ptr()
            and buffer.shape[0] == batch
            and keys.shape[-2] + extra <= buffer.shape[-2]
        )

    def update(
        self, key_states: torch.Tensor, value_states: torch.Tensor, *args: Any, **kwargs: Any
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        length = self.keys.shape[-2] if self.keys.numel() else 0
        new = key_states.shape[-2]
        if not self._owns(new, key_states.shape[0]):
            capacity = length + new + max(SPARE_COLUMNS, (length + new) // 4)
            self._key_buffer = _buffer_from(self.keys if length else None, key_states, capacity)
            self._value_buffer = _buffer_from(self.values if length else None, value_states, capacity)
        self._key_buffer[:, :, length : length + new] = key_states
        self._value_buffer[:, :, length : length + new] = value_states
        self.keys = self._key_buffer[:, :, : length + new]
        self.values = self._value_buffer[:, :, : length + new]
        return self.keys, self.values

    def reset(self) -> None:
        self._key_buffer = self._value_buffer = None
        super().reset()


def _buffer_from(old: torch.Tensor | None, new: torch.Tensor, capacity: int) -> torch.Tensor:
    """An empty (batch, heads, capacity, dim) buffer like `new`, with `old` copied into its first columns."""
    buffer = new.new_empty((*new.shape[:2], capacity, new.shape[3]))
    if old is not None:
        buffer[:, :, : old.shape[-2]] = old
    return buffer


def grow_in_place(cache: Any) -> None:
    """Turn the cache's plain DynamicLayers (as a model's own prefill made them) into GrowingLayers holding
    the same keys and values; the next token copies them into a buffer with room once."""
    for i, layer in enumerate(cache.layers):
        if type(layer) is DynamicLayer:
            grown = GrowingLayer()
            grown.__dict__.update(layer.__dict__)
            cache.layers[i] = grown
    if getattr(cache, "layer_class_to_replicate", None) is DynamicLayer:
        cache.layer_class_to_replicate = GrowingLayer
