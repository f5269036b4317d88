"""Packed grouped-query attention: transformers' results without repeat_kv, only in the thread that asked,
and the attention registry left as it was found."""

import threading
from types import SimpleNamespace

import pytest
import torch
import transformers.integrations.sdpa_attention as sdpa_module
from transformers import AutoConfig, AutoModelForCausalLM
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

from llm_tuning.models.gqa_attention import packed_gqa

MODULE = SimpleNamespace(num_key_value_groups=3, training=False, is_causal=True)


def _inputs(new=3, batch=2, length=7, heads=6, kv_heads=2, dim=8):
    torch.manual_seed(0)
    query = torch.randn(batch, heads, new, dim)
    key, value = torch.randn(batch, kv_heads, length, dim), torch.randn(batch, kv_heads, length, dim)
    causal = torch.ones(batch, 1, new, length, dtype=torch.bool)
    mask = causal.tril(length - new)  # each new token sees the cache and the new tokens before it
    mask[0, :, :, :2] = False  # row 0 is left-padded
    return query, key, value, mask


def _no_repeat_kv(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("repeat_kv was called: the heads were copied, not packed")

    monkeypatch.setattr(sdpa_module, "repeat_kv", refuse)


def test_equals_transformers_sdpa_without_repeating_heads(monkeypatch):
    query, key, value, mask = _inputs()
    want, _ = sdpa_attention_forward(MODULE, query, key, value, mask, dropout=0.0, scaling=0.3)
    _no_repeat_kv(monkeypatch)
    with packed_gqa():
        got, weights = ALL_ATTENTION_FUNCTIONS["sdpa"](
            MODULE, query, key, value, mask, dropout=0.0, scaling=0.3
        )
    assert weights is None and got.shape == want.shape == (2, 3, 6, 8)
    assert torch.allclose(got, want, atol=1e-6)


@pytest.mark.parametrize(
    "case",
    ["one new token", "no mask", "dropout", "position bias", "training", "no grouped heads"],
)
def test_other_cases_go_to_the_previous_function(case):
    query, key, value, mask = _inputs(new=1 if case == "one new token" else 3)
    module = SimpleNamespace(**{**vars(MODULE), "training": case == "training"})
    kwargs = {"dropout": 0.1 if case == "dropout" else 0.0, "scaling": 0.3}
    if case == "position bias":
        kwargs["position_bias"] = torch.zeros(1, 6, 3, 7)
    if case == "no grouped heads":
        key, value = key.repeat_interleave(3, dim=1), value.repeat_interleave(3, dim=1)
    calls = []

    def spy(*args, **kw):
        calls.append(case)
        return "previous", None

    ALL_ATTENTION_FUNCTIONS["sdpa"] = spy
    try:
        with packed_gqa():
            out = ALL_ATTENTION_FUNCTIONS["sdpa"](module, query, key, value, None if case == "no mask" else mask,
                                                  **kwargs)  # fmt: skip
        assert out == ("previous", None) and calls == [case]
        assert ALL_ATTENTION_FUNCTIONS["sdpa"] is spy  # the override that was there before comes back
    finally:
        del ALL_ATTENTION_FUNCTIONS["sdpa"]
    assert ALL_ATTENTION_FUNCTIONS["sdpa"] is sdpa_attention_forward


def test_only_the_thread_inside_packs_and_the_registry_is_restored_after_an_error(monkeypatch):
    query, key, value, mask = _inputs()
    seen = {}

    def other_thread():
        sdpa = ALL_ATTENTION_FUNCTIONS["sdpa"]
        seen["ours"] = sdpa is not sdpa_attention_forward
        try:
            sdpa(MODULE, query, key, value, mask, dropout=0.0)
        except AssertionError as err:
            seen["error"] = err

    with pytest.raises(RuntimeError), packed_gqa():
        # the other thread sees our function, which hands its call to transformers' own (repeat_kv included)
        _no_repeat_kv(monkeypatch)
        thread = threading.Thread(target=other_thread)
        thread.start()
        thread.join()
        raise RuntimeError("a failed forward")
    assert seen["ours"] and "repeat_kv was called" in str(seen["error"])
    assert ALL_ATTENTION_FUNCTIONS["sdpa"] is sdpa_attention_forward


def test_a_model_forward_with_drafts_gives_the_same_logits(monkeypatch):
    """A tiny grouped-query Llama: 3 new tokens per row against a left-padded cache, with and without packing."""
    torch.manual_seed(1)
    config = AutoConfig.for_model("llama", hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                  num_attention_heads=4, num_key_value_heads=2, vocab_size=100)  # fmt: skip
    model = AutoModelForCausalLM.from_config(config, attn_implementation="sdpa").eval()
    ids = torch.randint(3, 100, (2, 9))
    mask = torch.ones_like(ids)
    mask[0, :4] = 0
    pos = (mask.cumsum(-1) - 1).clamp(min=0)

    def forward():
        with torch.inference_mode():
            cache = model(
                input_ids=ids[:, :6], attention_mask=mask[:, :6], position_ids=pos[:, :6]
            ).past_key_values
            return model(
                input_ids=ids[:, 6:], attention_mask=mask, position_ids=pos[:, 6:], cache=cache
            ).logits

    want = forward()
    _no_repeat_kv(monkeypatch)
    with packed_gqa():
        got = forward()
    assert torch.allclose(got, want, atol=1e-5)
