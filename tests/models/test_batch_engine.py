"""The batch engine: mixed-adapter greedy rows equal one-row `model.generate`, rows join and leave mid-decode."""

from __future__ import annotations

import threading

import pytest
import torch
from tiny_models import random_adapter

from llm_tuning.models.adapters import AdapterSpec, load_adapters, mix_adapters, use_adapter
from llm_tuning.models.batch_engine import PEFT_BASE, BatchDecoder, GenRequest, decode_all
from llm_tuning.models.generate import _stop_ids
from llm_tuning.models.load import load_model, load_tokenizer

PROMPTS = [
    "hi",
    "What is 12 + 7? What is 12 + 7?",
    "the quick brown fox",
    "9 x 8 = 72. " * 4,
    "x",
    "hello world",
]


@pytest.fixture(scope="module")
def two_adapters(tiny_model, tmp_path_factory):
    root = tmp_path_factory.mktemp("engine")
    a = random_adapter(tiny_model, root / "a", 4, ("q_proj", "v_proj"), seed=1)
    b = random_adapter(tiny_model, root / "b", 8, ("q_proj", "o_proj", "down_proj"), seed=2)
    tokenizer = load_tokenizer(tiny_model)
    model = load_adapters(
        load_model(tiny_model, device="cpu"), [AdapterSpec("math", a), AdapterSpec("style", b)]
    )
    return model, tokenizer


def reference(model, tokenizer, ids: list[int], adapter: str | None, max_new: int) -> list[int]:
    """One row alone through transformers' own greedy `generate`."""
    input_ids = torch.tensor([ids])
    with use_adapter(model, None if adapter == PEFT_BASE else adapter), torch.inference_mode():
        out = model.generate(input_ids=input_ids, attention_mask=torch.ones_like(input_ids), do_sample=False,
                             max_new_tokens=max_new, eos_token_id=sorted(_stop_ids(tokenizer)),
                             pad_token_id=tokenizer.pad_token_id, temperature=None, top_p=None, top_k=None)  # fmt: skip
    return out[0, len(ids) :].tolist()


def test_mixed_adapter_rows_joining_and_leaving_equal_single_row_generate(two_adapters):
    model, tokenizer = two_adapters
    adapters = [PEFT_BASE, "math", "style"]
    requests = [
        GenRequest(
            tokenizer(p, add_special_tokens=False).input_ids, adapters[i % 3], max_new_tokens=3 + 4 * (i % 3)
        )
        for i, p in enumerate(PROMPTS * 2)
    ]
    # batch of 3: short rows finish and leave, waiting ones (longer prompts too) join mid-decode
    results = decode_all(BatchDecoder(model, _stop_ids(tokenizer)), requests, max_batch=3)
    for req, res in zip(requests, results, strict=True):
        assert res.tokens == reference(model, tokenizer, req.input_ids, req.adapter, req.max_new_tokens)
    # the adapters change the replies, so the equality above checks that each row got its own adapter
    assert len({tuple(r.tokens[:3]) for r in results[:3]}) > 1


def test_seeded_sampling_does_not_depend_on_the_batch(two_adapters):
    model, tokenizer = two_adapters
    ids = tokenizer("the quick brown fox", add_special_tokens=False).input_ids

    def sampled(others: int, seed: int = 7) -> list[int]:
        row = GenRequest(ids, "math", max_new_tokens=8, temperature=1.5, top_p=0.9, seed=seed)
        noise = [GenRequest(ids[: 1 + i], "style", 5, temperature=1.0, seed=i) for i in range(others)]
        return decode_all(BatchDecoder(model, []), [*noise, row], max_batch=4)[-1].tokens

    alone = sampled(0)
    assert sampled(3) == alone == sampled(5)
    assert any(sampled(0, seed) != alone for seed in (8, 9, 10))  # the seed matters


def test_cancel_and_on_token_end_a_row_and_leave_the_others(two_adapters):
    model, tokenizer = two_adapters
    ids = tokenizer("hello world", add_special_tokens=False).input_ids
    cancel, seen = threading.Event(), []

    def on_token(token: int) -> bool:
        seen.append(token)
        if len(seen) == 2:
            cancel.set()  # e.g. a client that hung up
        return False

    requests = [
        GenRequest(ids, PEFT_BASE, 10, on_token=on_token),
        GenRequest(ids, "math", 10, cancel=cancel),
        GenRequest(ids, "style", 10, on_token=lambda t: len(seen) >= 4),  # a stop string, seen after 4 tokens
    ]
    watcher, cancelled, stopped = decode_all(BatchDecoder(model, []), requests, max_batch=3)
    # row 0 sets the flag while sampling its 2nd token; row 1 comes next in that step and leaves at once
    assert (cancelled.finish_reason, len(cancelled.tokens)) == ("cancelled", 1)
    assert (stopped.finish_reason, len(stopped.tokens)) == ("stop", 4)
    assert (watcher.finish_reason, len(watcher.tokens)) == ("length", 10)
    assert watcher.tokens == reference(model, tokenizer, ids, PEFT_BASE, 10)


def test_unnamed_rows_run_the_adapter_the_model_is_set_to(two_adapters):
    model, tokenizer = two_adapters
    ids = tokenizer("hello world", add_special_tokens=False).input_ids
    with use_adapter(model, "style"):  # None: as set up (compare/predict set the adapter around the call)
        out = decode_all(BatchDecoder(model, []), [GenRequest(ids, None, 6), GenRequest(ids, "math", 6)], 2)
    assert out[0].tokens == reference(model, tokenizer, ids, "style", 6)
    assert out[1].tokens == reference(model, tokenizer, ids, "math", 6)
    with use_adapter(model, None):
        alone = decode_all(BatchDecoder(model, []), [GenRequest(ids, None, 6)], 1)
        with pytest.raises(
            RuntimeError, match="disabled"
        ):  # PEFT would silently run the base model for "math"
            decode_all(BatchDecoder(model, []), [GenRequest(ids, None, 6), GenRequest(ids, "math", 6)], 2)
    assert alone[0].tokens == reference(model, tokenizer, ids, None, 6)


def test_plain_model_without_adapters(tiny_model):
    tokenizer = load_tokenizer(tiny_model)
    model = load_model(tiny_model, device="cpu")
    requests = [GenRequest(tokenizer(p, add_special_tokens=False).input_ids, None, 5) for p in PROMPTS]
    results = decode_all(BatchDecoder(model, _stop_ids(tokenizer)), requests, max_batch=4)
    assert [r.tokens for r in results] == [
        reference(model, tokenizer, q.input_ids, None, 5) for q in requests
    ]


def test_per_row_weighted_mix_equals_a_cat_mix_adapter(two_adapters):
    """A row asking for math:0.7+style:0.3 gets what PEFT's `cat` mix of the two computes, next to other rows."""
    model, tokenizer = two_adapters
    specs = [AdapterSpec("math", "", 0.7), AdapterSpec("style", "", 0.3)]
    if "both" not in model.peft_config:
        mix_adapters(model, specs, "cat", None, "both")
    mix = (("math", 0.7), ("style", 0.3))
    requests = [GenRequest(tokenizer(p, add_special_tokens=False).input_ids, a, 8)
                for p in PROMPTS[:4] for a in (mix, "math", PEFT_BASE)]  # fmt: skip
    results = decode_all(BatchDecoder(model, _stop_ids(tokenizer)), requests, max_batch=5)
    for req, res in zip(requests, results, strict=True):
        adapter = "both" if req.adapter == mix else req.adapter
        assert res.tokens == reference(model, tokenizer, req.input_ids, adapter, 8)
    assert [r.tokens for r in results[0::3]] != [r.tokens for r in results[1::3]]  # the mix is not just math


def test_prompt_lookup_drafts_are_exact_and_used(two_adapters):
    """Greedy rows of a small batch check prompt-lookup drafts in one forward: same tokens as one-row generate,
    with draft tokens kept, next to a sampled row (never drafted) and rows of other adapters."""
    model, tokenizer = two_adapters
    texts = ["9 x 8 = 72. 9 x 8 = 72. 9 x 8 =", "the quick brown fox, the quick brown", "hello world hello"]
    requests = [GenRequest(tokenizer(t, add_special_tokens=False).input_ids, a, 12)
                for t in texts for a in (PEFT_BASE, "math", "style")]  # fmt: skip
    sampled = GenRequest(requests[0].input_ids, "math", 12, temperature=1.0, seed=3)
    decoder = BatchDecoder(model, _stop_ids(tokenizer), lookahead=4, lookahead_tokens=16)
    results = decode_all(decoder, [*requests, sampled], max_batch=3)
    for req, res in zip(requests, results[:-1], strict=True):
        assert res.tokens == reference(model, tokenizer, req.input_ids, req.adapter, 12)
    assert decoder.accepted > 0 and decoder.drafted > decoder.accepted  # drafts were used, and some refused
    off = BatchDecoder(model, _stop_ids(tokenizer), lookahead=0)
    assert [r.tokens for r in decode_all(off, [*requests, sampled], 3)] == [r.tokens for r in results]
    assert off.drafted == 0


def _draft_widths(monkeypatch) -> list[int]:
    """The longest draft of every draft check the engine runs from now on (filled as it runs)."""
    from llm_tuning.models import batch_engine

    widths: list[int] = []
    verify = batch_engine._verify
    monkeypatch.setattr(batch_engine, "_verify", lambda d, last, drafts: widths.append(max(map(len, drafts)))
                        or verify(d, last, drafts))  # fmt: skip
    return widths


def test_drafts_shrink_to_one_token_while_they_are_refused(two_adapters, monkeypatch):
    """Drafts that are always wrong: after a few one-token checks only every PROBE_EVERY-th step checks one
    (drafts that are right grow to 4 tokens: the next test); outputs unchanged."""
    from llm_tuning.models import batch_engine

    model, tokenizer = two_adapters
    requests = [
        GenRequest(tokenizer(t, add_special_tokens=False).input_ids, PEFT_BASE, 16) for t in PROMPTS[:2]
    ]
    wanted = [reference(model, tokenizer, r.input_ids, PEFT_BASE, 16) for r in requests]
    wrong = next(t for t in range(5, 500) if all(t not in w for w in wanted))  # never a greedy choice
    monkeypatch.setattr(batch_engine, "find_draft", lambda sequence, length: [wrong] * length)
    widths = _draft_widths(monkeypatch)
    decoder = BatchDecoder(model, _stop_ids(tokenizer), lookahead=4, lookahead_tokens=32)
    results = decode_all(decoder, requests, max_batch=2)
    assert [r.tokens for r in results] == wanted
    assert decoder.accepted == 0 and set(widths) == {1}, widths
    steps = max(len(w) for w in wanted)
    assert decoder.draft_steps >= steps - 1 and len(widths) <= 4 + steps // batch_engine.PROBE_EVERY, widths


def test_drafts_that_are_kept_grow_to_the_longest(two_adapters, monkeypatch):
    """Drafts that are always right (the reference's own next tokens): checks grow from 1 token to 4."""
    from llm_tuning.models import batch_engine

    model, tokenizer = two_adapters
    request = GenRequest(tokenizer(PROMPTS[1], add_special_tokens=False).input_ids, PEFT_BASE, 48)
    wanted = reference(model, tokenizer, request.input_ids, PEFT_BASE, 48)
    prompt = len(request.input_ids)
    monkeypatch.setattr(batch_engine, "find_draft", lambda seq, length: wanted[len(seq) - prompt :][:length])
    widths = _draft_widths(monkeypatch)
    decoder = BatchDecoder(model, _stop_ids(tokenizer), lookahead=4, lookahead_tokens=32)
    assert decode_all(decoder, [request], max_batch=1)[0].tokens == wanted
    assert widths[0] == 1 and 4 in widths and decoder.accepted == decoder.drafted, widths
