"""`llm-tuning orpo / simpo / cpo / kto` on the tiny model, through the shared preference runner.

Each runs one step: the loss is finite, only the LoRA weights change, the adapter reloads with plain
PEFT, and the held-out rows are scored. KTO reads unpaired {prompt, completion, label} rows.
"""

from __future__ import annotations

import json
import math

import pytest
import torch
from rlhf_rows import arithmetic_rows, write_rows

from llm_tuning.cli import main
from llm_tuning.rlhf import preference
from llm_tuning.rlhf.data import feedback_from_pairs, read_feedback

METHODS = {  # command -> extra flags
    "orpo": ["--beta", "0.5"],
    "simpo": ["--beta", "2.0", "--simpo_gamma", "0.5"],
    "cpo": ["--beta", "0.1", "--cpo_alpha", "1.0"],
    "kto": ["--beta", "0.1"],
}


def feedback_rows(n: int) -> list[dict]:
    """Unpaired rows from preference pairs: the chosen reply is good, the rejected one bad."""
    return feedback_from_pairs(arithmetic_rows(n))


@pytest.fixture()
def feedback_file(tmp_path):
    return write_rows(tmp_path / "feedback.jsonl", feedback_rows(6))


@pytest.mark.parametrize("command", list(METHODS))
def test_one_step_trains_only_lora_and_reloads_with_peft(command, tiny_model, pairs_file, feedback_file, tmp_path,
                                                          monkeypatch, capsys):  # fmt: skip
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    trainers = []
    make_trainer = preference.make_trainer
    monkeypatch.setattr(
        preference, "make_trainer", lambda *a: trainers.append(make_trainer(*a)) or trainers[-1]
    )
    data = feedback_file if command == "kto" else pairs_file
    out = tmp_path / command
    argv = [command, "--model", tiny_model, "--data", str(data), "--max_steps", "1", "--lora_rank", "4",
            "--learning_rate", "1e-2", "--eval_split", "0.25", "--logging_steps", "1",
            "--per_device_train_batch_size", "4", "--report_to", "none", "--output_dir", str(out), *METHODS[command]]  # fmt: skip
    assert main(argv) == 0
    report = json.loads((out / "training_log.json").read_text())
    summary = report["summary"]
    assert summary["steps"] == 1 and math.isfinite(summary["train_loss"])
    assert all(math.isfinite(r["loss"]) for r in report["log"] if "loss" in r)
    assert [r["step"] for r in report["log"] if "eval_loss" in r] == [1]  # evaluated once, not again after
    held_out = summary["held_out"]
    assert held_out["rows"] == summary["eval_pairs"] >= 3
    assert 0 <= held_out["label_agreement" if command == "kto" else "preference_accuracy"] <= 1
    assert "adapter saved to" in capsys.readouterr().out

    base = AutoModelForCausalLM.from_pretrained(tiny_model).state_dict()
    trained = trainers[0].model
    lora = {n: p for n, p in trained.named_parameters() if ".lora_" in n}
    assert lora and any(
        p.abs().sum() > 0 for n, p in lora.items() if "lora_B" in n
    )  # B starts at 0: it moved
    for name, param in trained.named_parameters():
        if ".lora_" not in name:
            plain = name.replace("base_model.model.", "").replace(".base_layer", "")
            assert not param.requires_grad and torch.equal(param.detach(), base[plain]), name

    reloaded = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_model), str(out))
    ids = torch.tensor([[1, 2, 3, 4]])
    with torch.no_grad():
        adapted = reloaded(input_ids=ids).logits
        with reloaded.disable_adapter():
            plain_logits = reloaded(input_ids=ids).logits
    assert torch.isfinite(adapted).all() and not torch.allclose(adapted, plain_logits)


def test_orpo_continues_an_sft_adapter(tiny_model, pairs_file, tmp_path):
    """A reference-free method starting from --sft_adapter: the adapter moves on from those weights."""
    from safetensors.torch import load_file

    first, second = tmp_path / "first", tmp_path / "second"
    common = ["orpo", "--model", tiny_model, "--data", str(pairs_file), "--lora_rank", "4", "--learning_rate", "1e-2",
              "--per_device_train_batch_size", "2", "--eval_split", "0", "--report_to", "none"]  # fmt: skip
    assert main([*common, "--max_steps", "2", "--output_dir", str(first)]) == 0
    assert main([*common, "--max_steps", "1", "--sft_adapter", str(first), "--output_dir", str(second)]) == 0
    before = load_file(str(first / "adapter_model.safetensors"))
    after = load_file(str(second / "adapter_model.safetensors"))
    assert after.keys() == before.keys() and any(not torch.equal(after[k], before[k]) for k in before)


def test_feedback_rows_read_json_and_csv_labels(tmp_path):
    jsonl = write_rows(tmp_path / "f.jsonl", feedback_rows(2))
    assert [r.label for r in read_feedback(jsonl)] == [True, False, True, False]
    csv = tmp_path / "f.csv"
    csv.write_text("prompt,completion,label\nWhat is 1 + 1?,1 + 1 = 2,true\nWhat is 1 + 1?,1 + 1 = 3,False\n")
    rows = read_feedback(csv)
    assert [(r.completion, r.label) for r in rows] == [("1 + 1 = 2", True), ("1 + 1 = 3", False)]
    assert rows[0].prompt == [{"role": "user", "content": "What is 1 + 1?"}]
