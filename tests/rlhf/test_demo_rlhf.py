"""`demo --rlhf` end to end on a tiny random model: every stage runs, reports and leaves its adapter."""

from __future__ import annotations

import json
from pathlib import Path

from llm_tuning.data.arithmetic import make_split
from llm_tuning.demo_rlhf import RLHFDemoConfig, preference_rows, run_rlhf_demo


def test_preference_pairs_choose_the_right_answer_over_a_wrong_one():
    questions, _ = make_split(30, 2, seed=0)
    for q, row in zip(questions, preference_rows(questions, seed=0), strict=True):
        assert row["chosen"] == q.target and row["rejected"] != row["chosen"]
        assert (
            row["rejected"].rsplit("=", 1)[0] == row["chosen"].rsplit("=", 1)[0]
        )  # same question, other result


def test_every_stage_runs_and_reports(tiny_model, tmp_path):
    out = tmp_path / "rlhf"
    cfg = RLHFDemoConfig(model=tiny_model, output_dir=str(out), sft_adapter=str(tmp_path / "none"), sft_steps=2,
                         train_size=40, test_size=4, rm_pairs=12, rm_epochs=1, ppo_steps=1, grpo_steps=1, rl_batch=2)  # fmt: skip
    result = run_rlhf_demo(cfg)
    assert [s["stage"] for s in result.stages] == ["SFT adapter (start)", "reward model", "PPO (1 steps)",
                                                    "GRPO (1 steps)", "RLOO (1 steps)"]  # fmt: skip
    assert all(0 <= s["accuracy"] <= 1 for s in result.stages if s["accuracy"] is not None)
    assert result.reward_model_accuracy is not None and 0 <= result.reward_model_accuracy <= 1
    for folder in ("sft_adapter", "reward_model", "ppo", "grpo", "rloo"):
        assert (out / folder / "adapter_config.json").is_file(), folder
    stages = [json.loads(line) for line in Path(out / "stages.jsonl").read_text().splitlines()]
    assert len(stages) == 5 and "pairwise accuracy" in result.summary()
