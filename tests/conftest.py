"""Shared fixtures: a tokenizer built in memory and tiny random models, saved as HF folders.

Everything is offline: no hub access, nothing downloaded.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

ASSETS = Path(__file__).parent / "assets"

from tiny_models import CHATML_WITH_SYSTEM, build_model, build_tokenizer  # noqa: E402


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> str:
    """Path of a tiny random Llama with a ChatML tokenizer."""
    folder = tmp_path_factory.mktemp("tiny-llama")
    tokenizer = build_tokenizer(folder)
    build_model(folder, "llama", vocab_size=len(tokenizer))
    return str(folder)


@pytest.fixture(scope="session")
def tokenizer(tiny_model):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model)


@pytest.fixture()
def qa_file(tmp_path) -> Path:
    """The original's q/a rows, JSON lines in a .json file."""
    rows = [
        {"q": f"What is {a} + {b}?", "a": f"{a} + {b} = {a + b}"} for a, b in [(1, 2), (3, 4), (5, 6), (7, 8)]
    ]
    path = tmp_path / "simple_math.json"
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n", encoding="utf-8")
    return path


@pytest.fixture(autouse=True)
def isolated_home(tmp_path, monkeypatch):
    """Each test gets its own LLM_TUNING_HOME cache, except the embedded model reuses the shared one."""
    monkeypatch.setenv("LLM_TUNING_HOME", str(tmp_path / "home"))
    shared = Path(os.environ.get("LLM_TUNING_TEST_MODELS", Path.home() / ".cache" / "llm-tuning" / "models"))
    shared.mkdir(parents=True, exist_ok=True)
    (tmp_path / "home").mkdir()
    (tmp_path / "home" / "models").symlink_to(shared)


@pytest.fixture(scope="session")
def other_model(tmp_path_factory) -> str:
    """A tiny random Qwen2 whose tokenizer differs from `tiny_model`'s (its template adds a system turn)."""
    folder = tmp_path_factory.mktemp("tiny-qwen2")
    tokenizer = build_tokenizer(folder)
    tokenizer.chat_template = CHATML_WITH_SYSTEM
    tokenizer.save_pretrained(folder)
    build_model(folder, "qwen2", vocab_size=len(tokenizer))
    return str(folder)
