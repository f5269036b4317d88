"""Fixtures for eval tests: held-out rows, adapters on the tiny model, and an adapter for another base."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from tiny_models import build_model, build_tokenizer, random_adapter

ROWS = [
    {"q": "What is 12 + 7?", "a": "12 + 7 = 19"},
    {"q": "What is 9 x 8?", "a": "72"},
    {"q": "hello world", "a": "the quick brown fox"},
    {"q": "你好", "a": "你好世界"},
]


@pytest.fixture()
def held_out(tmp_path) -> Path:
    path = tmp_path / "held_out.jsonl"
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in ROWS), encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def adapters(tiny_model, tmp_path_factory) -> dict[str, str]:
    """A random adapter that changes the replies, another one, and a zero one (LoRA B = 0: the base)."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    root = tmp_path_factory.mktemp("adapters")
    zero = root / "zero"
    model = AutoModelForCausalLM.from_pretrained(tiny_model)
    get_peft_model(model, LoraConfig(r=4, target_modules=["q_proj", "v_proj"])).save_pretrained(zero)
    return {
        "rand": random_adapter(tiny_model, root / "rand", alpha=64),
        "rand2": random_adapter(tiny_model, root / "rand2", seed=1, alpha=64),
        "zero": str(zero),
    }


@pytest.fixture(scope="session")
def foreign_adapter(tmp_path_factory) -> str:
    """An adapter trained on a wider model (hidden 64, the tiny model has 32)."""
    folder = tmp_path_factory.mktemp("wide-llama")
    tokenizer = build_tokenizer(folder)
    build_model(folder, "llama", vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128)
    return random_adapter(str(folder), tmp_path_factory.mktemp("foreign") / "wide")
