"""Generation metrics at --eval_steps during training, and the best checkpoint chosen by one of them."""

from __future__ import annotations

import json

import pytest

from llm_tuning.config import ConfigError
from llm_tuning.train.sft import TrainConfig, run

ROWS = [{"q": f"What is {a} + {b}?", "a": f"{a} + {b} = {a + b}"} for a in range(1, 5) for b in range(1, 4)]


def test_prompts_and_targets_come_back_from_tokenized_rows(tiny_model):
    from datasets import Dataset

    from llm_tuning.data.template import prompt_text
    from llm_tuning.eval.likelihood import encode_conversations
    from llm_tuning.models.load import load_tokenizer
    from llm_tuning.train.generation_eval import prompts_and_targets

    tokenizer = load_tokenizer(tiny_model)
    conversation = [
        {"role": "user", "content": "What is 1 + 2?"},
        {"role": "assistant", "content": "1 + 2 = 3"},
    ]
    ((ids, labels),) = encode_conversations(tokenizer, [conversation])
    prompts, targets = prompts_and_targets(
        tokenizer, Dataset.from_dict({"input_ids": [ids], "labels": [labels]}), 5
    )
    assert prompts == [prompt_text(tokenizer, conversation[:1])] and targets == ["1 + 2 = 3"]


def test_generation_metrics_are_logged_and_pick_the_best_checkpoint(tiny_model, tmp_path):
    data, held_out = tmp_path / "train.jsonl", tmp_path / "eval.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    held_out.write_text("".join(json.dumps(r) + "\n" for r in ROWS[:4]))
    out = tmp_path / "out"
    cfg = TrainConfig(model=tiny_model, data=str(data), eval_data=str(held_out), prompt_key="q", target_key="a",
                      output_dir=str(out), max_steps=4, eval_steps=2, save_steps=2, logging_steps=1,
                      per_device_train_batch_size=4, learning_rate=1e-2, eval_metrics="rouge_l,exact_match",
                      eval_max_new_tokens=6, metric_for_best_model="rouge_l", load_best_model_at_end=True,
                      report_to="none", device="cpu")  # fmt: skip
    result = run(cfg)
    logged = [r for r in result.log if "eval_rouge_l" in r]
    assert [r["step"] for r in logged] == [2, 4, 4] and all(0 <= r["eval_rouge_l"] <= 1 for r in logged)
    losses = [r for r in result.log if "eval_loss" in r]
    assert [r["step"] for r in losses][-2:] == [4, 4]  # evaluated again: the best model loaded at the end
    assert result.eval_loss == losses[-1]["eval_loss"]
    saved = json.loads((out / "training_log.json").read_text())["log"]
    assert any("eval_exact_match" in r for r in saved)
    state = json.loads(sorted(out.glob("checkpoint-*/trainer_state.json"))[-1].read_text())
    during = [r["eval_rouge_l"] for r in logged if r["step"] in (2, 4)][:2]
    assert state["best_metric"] == pytest.approx(max(during), abs=1e-4)
    assert state["best_model_checkpoint"].endswith(f"checkpoint-{2 if during[0] >= during[1] else 4}")


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        ({"eval_metrics": "rouge_l"}, "need an eval set"),
        ({"eval_split": 0.2, "eval_metrics": "meteor"}, "--eval_metrics: unknown metric 'meteor'"),
        ({"eval_split": 0.2, "eval_metrics": "bleu", "metric_for_best_model": "rouge_l"},
         "--metric_for_best_model 'rouge_l': choose loss or one of --eval_metrics"),
        ({"eval_split": 0.2, "load_best_model_at_end": True, "eval_steps": 3, "save_steps": 10},
         r"--save_steps \(10\) must be a multiple of --eval_steps \(3\)"),
    ],
)  # fmt: skip
def test_bad_eval_selection_flags(flags, message):
    with pytest.raises(ConfigError, match=message):
        TrainConfig(data="train.jsonl", **flags)
