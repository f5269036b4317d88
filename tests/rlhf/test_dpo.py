"""`llm-tuning dpo` on the tiny model: files, margins and accuracy reported, only the adapter trained."""

from __future__ import annotations

import json

import torch
from safetensors.torch import load_file

from llm_tuning.cli import main


def test_dpo_command_writes_adapter_and_reward_margins(tiny_model, pairs_file, tmp_path, capsys):
    out = tmp_path / "dpo"
    args = ["dpo", "--model", tiny_model, "--data", str(pairs_file), "--max_steps", "3", "--lora_rank", "4",
            "--learning_rate", "1e-2", "--beta", "0.5", "--loss_type", "ipo", "--eval_split", "0.25",
            "--logging_steps", "1", "--per_device_train_batch_size", "2"]  # fmt: skip
    assert main([*args, "--output_dir", str(out)]) == 0
    for name in (
        "adapter_model.safetensors",
        "llm_tuning_config.yaml",
        "training_log.json",
        "training_curves.png",
    ):
        assert (out / name).exists(), name
    report = json.loads((out / "training_log.json").read_text())
    assert any("rewards/margins" in r for r in report["log"])
    assert report["summary"]["eval_pairs"] == 3 and report["summary"]["eval_accuracy"] is not None
    assert "held-out reward accuracy" in capsys.readouterr().out
    weights = load_file(str(out / "adapter_model.safetensors"))
    assert all(".lora_" in k for k in weights) and any(
        v.abs().sum() > 0 for k, v in weights.items() if "lora_B" in k
    )

    # continuing from that adapter: TRL's frozen "ref" copy is the reference, and is not saved
    again = tmp_path / "again"
    assert main([*args, "--output_dir", str(again), "--sft_adapter", str(out), "--max_steps", "1"]) == 0
    after = load_file(str(again / "adapter_model.safetensors"))
    assert after.keys() == weights.keys() and any(not torch.equal(after[k], weights[k]) for k in weights)
