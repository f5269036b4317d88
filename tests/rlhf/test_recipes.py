"""Each RLHF command ships a recipe (tests/test_configs.py loads every recipe into its config)."""

from __future__ import annotations

from pathlib import Path

RECIPES = sorted((Path(__file__).parents[2] / "configs" / "rlhf").glob("*.yaml"))


def test_there_are_recipes_for_every_rlhf_command():
    assert {p.stem.split("_")[0] for p in RECIPES} >= {"rm", "ppo", "dpo", "grpo"}
    for path in RECIPES:
        command = path.stem.split("_")[0]
        assert f"llm-tuning {command} configs/rlhf/{path.name}" in path.read_text(encoding="utf-8")
