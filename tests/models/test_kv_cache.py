"""The batch engine's in-place cache gives attention exactly what transformers' DynamicLayer gives it."""

import torch
from transformers.cache_utils import DynamicCache, DynamicLayer

from llm_tuning.models.kv_cache import GrowingLayer, grow_in_place


def _states(batch: int, length: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch, 2, length, 4, generator=g), torch.randn(batch, 2, length, 3, generator=g)


def test_updates_equal_dynamic_layer_and_reuse_one_buffer():
    plain, grown = DynamicLayer(), GrowingLayer()
    for step, length in enumerate([5, 1, 1, 1, 3, 1]):
        k, v = _states(2, length, step)
        want, got = plain.update(k, v), grown.update(k, v)
        assert all(torch.equal(a, b) for a, b in zip(want, got, strict=True))
        if step == 1:
            buffer = grown.keys.data_ptr()
    assert grown.keys.data_ptr() == buffer  # the tokens after the first were written in place
    assert grown.get_seq_length() == plain.get_seq_length() == 12


def test_keys_replaced_from_outside_are_taken_over():
    """Row removal, padding trim, crop and merge replace keys / values; the next update must build on them."""
    plain, grown = DynamicLayer(), GrowingLayer()
    for layer in (plain, grown):
        layer.update(*_states(3, 6, 0))
    edits = [
        lambda t: t[torch.tensor([0, 2])],  # a row leaves
        lambda t: t[:, :, 2:],  # leading padding trimmed: a view into the old buffer
        lambda t: t[:, :, :-1],  # a rejected draft column dropped: same start, shorter
        lambda t: torch.cat([t, t[:1]]),  # a row joins
    ]
    for step, edit in enumerate(edits, start=1):
        for layer in (plain, grown):
            layer.keys, layer.values = edit(layer.keys), edit(layer.values)
        k, v = _states(plain.keys.shape[0], 1, step)
        want, got = plain.update(k, v), grown.update(k, v)
        assert all(torch.equal(a, b) for a, b in zip(want, got, strict=True)), f"after edit {step}"


def test_grow_in_place_converts_only_plain_layers_and_keeps_their_states():
    cache = DynamicCache()
    cache.update(*_states(1, 4, 0), layer_idx=0)
    cache.update(*_states(1, 4, 1), layer_idx=1)
    before = [layer.keys.clone() for layer in cache.layers]
    grow_in_place(cache)
    assert [type(layer) for layer in cache.layers] == [GrowingLayer, GrowingLayer]
    assert all(torch.equal(a, layer.keys) for a, layer in zip(before, cache.layers, strict=True))
    assert cache.layer_class_to_replicate is GrowingLayer
    keys, _ = cache.update(*_states(1, 1, 2), layer_idx=0)
    assert keys.shape[-2] == 5 and torch.equal(keys[:, :, :4], before[0])
