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

CHATML = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

CORPUS = [
    "What is 12 + 7? 12 + 7 = 19. What is 9 x 8? 9 x 8 = 72. The answer is 42.",
    "hello world, the quick brown fox jumps over the lazy dog 0123456789 + - x / = ?",
    "user assistant system You are a helpful assistant. Answer briefly.",
    "food drinks price hygiene service parking positive neutral negative unmentioned",
]


def build_tokenizer(folder: Path):
    """A byte-level BPE tokenizer (vocab ~600) with ChatML special tokens and chat template."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    special = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=600, special_tokens=special,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())  # fmt: skip
    tok.train_from_iterator(CORPUS * 20, trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<|im_start|>", eos_token="<|im_end|>",
                                   pad_token="<|endoftext|>", unk_token="<|endoftext|>")  # fmt: skip
    fast.chat_template = CHATML
    fast.save_pretrained(folder)
    return fast


def build_model(folder: Path, arch: str = "llama", vocab_size: int = 600, seed: int = 0) -> Path:
    """A 2-layer random model of the given architecture, saved next to the tokenizer."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    torch.manual_seed(seed)
    small = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                 num_key_value_heads=2, max_position_embeddings=256, vocab_size=vocab_size)  # fmt: skip
    if arch == "gpt2":
        config = AutoConfig.for_model(
            "gpt2", n_embd=32, n_layer=2, n_head=4, n_positions=256, vocab_size=vocab_size
        )
    else:
        config = AutoConfig.for_model(arch, **small)
    config.eos_token_id, config.pad_token_id, config.bos_token_id = 2, 0, 1
    model = AutoModelForCausalLM.from_config(config)
    model.save_pretrained(folder)
    return folder


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


CHATML_WITH_SYSTEM = (
    "{% if messages[0]['role'] != 'system' %}{{ '<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n' }}"
    "{% endif %}" + CHATML
)


@pytest.fixture(scope="session")
def other_model(tmp_path_factory) -> str:
    """A tiny random Qwen2 whose tokenizer differs from `tiny_model`'s (its template adds a system turn)."""
    folder = tmp_path_factory.mktemp("tiny-qwen2")
    tokenizer = build_tokenizer(folder)
    tokenizer.chat_template = CHATML_WITH_SYSTEM
    tokenizer.save_pretrained(folder)
    build_model(folder, "qwen2", vocab_size=len(tokenizer))
    return str(folder)
