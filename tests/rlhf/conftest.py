"""Fixtures for the RLHF command tests: preference pairs, prompt rows, reward functions, a tiny reward model."""

from __future__ import annotations

from pathlib import Path

import pytest
from rlhf_rows import arithmetic_rows, write_rows


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny models gain nothing from threads, and on a busy shared CPU two threads run 10x slower."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture()
def pairs_file(tmp_path) -> Path:
    return write_rows(tmp_path / "pairs.jsonl", arithmetic_rows(12))


@pytest.fixture()
def prompts_file(tmp_path) -> Path:
    rows = [{"prompt": r["prompt"], "answer": r["answer"]} for r in arithmetic_rows(8, seed=1)]
    return write_rows(tmp_path / "prompts.jsonl", rows)


REWARDS = """
def length_reward(prompts, completions, **columns):
    return [len(c) / 10 for c in completions]

def broken(prompts, completions, **columns):
    raise ZeroDivisionError("division by zero")

def not_a_number(prompts, completions, **columns):
    return ["good"] * len(completions)

def too_few(prompts, completions, **columns):
    return [1.0]
"""


@pytest.fixture()
def reward_file(tmp_path) -> Path:
    path = tmp_path / "my_rewards.py"
    path.write_text(REWARDS, encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def reward_model_dir(tiny_model, tmp_path_factory) -> str:
    """A reward adapter trained for a few steps on the tiny model (its score head is no longer random)."""
    from llm_tuning.rlhf.reward_model import RewardModelConfig, run

    folder = tmp_path_factory.mktemp("rm")
    data = write_rows(folder / "pairs.jsonl", arithmetic_rows(12))
    run(RewardModelConfig(model=tiny_model, data=str(data), output_dir=str(folder / "out"), max_steps=3,
                          lora_rank=4, learning_rate=1e-2, report_to="none", save_steps=1000))  # fmt: skip
    return str(folder / "out")
