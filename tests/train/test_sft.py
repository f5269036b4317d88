"""LoRA SFT on the tiny model: output files, only LoRA weights change, plain PEFT reloads the adapter,
the loss falls, continuing from an adapter and resuming from a checkpoint."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

import llm_tuning.train.sft as sft
from llm_tuning.config import ConfigError
from llm_tuning.models.adapters import load_with_adapters
from llm_tuning.train.sft import TrainConfig

PROBE = torch.tensor([[1, 67, 68, 69, 70, 2, 201, 1]])  # a few token ids to compare logits on


def memorisable_rows() -> list[dict]:
    return [
        {"q": f"What is {a} + {b}?", "a": f"{a} + {b} = {a + b}"} for a, b in [(1, 2), (3, 4), (5, 6), (7, 8)]
    ]


def quick(model: str, data: Path, out: Path, **overrides) -> TrainConfig:
    """A fast config: no TensorBoard, no dropout, constant high lr.

    The random model's lm_head and final norm are frozen and tiny, so the loss cannot fall far below
    ln(vocab) ~ 6.0; lr 1e-2 at rank 8 takes it from ~5.9 to ~5.5 in 30 steps.
    """
    values = dict(model=model, data=str(data), prompt_key="q", target_key="a", output_dir=str(out), max_steps=4,
                  per_device_train_batch_size=4, learning_rate=1e-2, lr_scheduler_type="constant", warmup_steps=0,
                  lora_rank=8, lora_dropout=0.0, logging_steps=1, save_steps=1000, report_to="none", device="cpu")  # fmt: skip
    return TrainConfig(**{**values, **overrides})


def logits(model) -> torch.Tensor:
    with torch.no_grad():
        return model(input_ids=PROBE).logits  # (1, seq, vocab)


@pytest.fixture(scope="module")
def data_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("sft-data") / "memorise.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in memorisable_rows()), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def trained(tiny_model, data_file, tmp_path_factory):
    """30 steps on 4 rows; yields (result, the PeftModel as trained, its first-step logits)."""
    home = tmp_path_factory.mktemp("sft-home")
    out = tmp_path_factory.mktemp("sft") / "adapter"
    seen = {}
    original = sft.build_model

    def capture(cfg):
        model = original(cfg)
        seen["model"] = model
        return model

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("LLM_TUNING_HOME", str(home))
        mp.setattr(sft, "build_model", capture)
        result = sft.run(quick(tiny_model, data_file, out, max_steps=30, logging_steps=5))
    return result, seen["model"]


def test_output_files(trained, tiny_model):
    result, _ = trained
    out = result.output_dir
    for name in ("adapter_model.safetensors", "adapter_config.json", "tokenizer.json", "tokenizer_config.json",
                 "llm_tuning_config.yaml", "training_log.json", "training_curves.png"):  # fmt: skip
        assert (out / name).is_file(), name
    assert (out / "training_curves.png").read_bytes()[:4] == b"\x89PNG"
    saved = yaml.safe_load((out / "llm_tuning_config.yaml").read_text())
    assert saved["model"] == tiny_model and saved["max_steps"] == 30 and saved["learning_rate"] == 1e-2
    log = json.loads((out / "training_log.json").read_text())
    assert log["summary"]["steps"] == result.steps == 30
    assert [r["step"] for r in log["log"] if "loss" in r] == [5, 10, 15, 20, 25, 30]
    assert result.trained_tokens > 0
    assert not list(out.glob(".adapter.*"))  # the temp folder is gone
    adapter_config = json.loads((out / "adapter_config.json").read_text())
    assert adapter_config["r"] == 8 and adapter_config["lora_alpha"] == 16
    assert sorted(adapter_config["target_modules"]) == ["down_proj", "gate_proj", "k_proj", "o_proj", "q_proj",
                                                        "up_proj", "v_proj"]  # fmt: skip


def test_loss_decreases(trained):
    result, _ = trained
    losses = [r["loss"] for r in result.log if "loss" in r]
    assert len(losses) == 6
    assert losses[-1] < losses[0] - 0.1, losses


def test_only_lora_weights_change(trained, tiny_model):
    from transformers import AutoModelForCausalLM

    result, model = trained
    fresh = AutoModelForCausalLM.from_pretrained(tiny_model).state_dict()
    base = {}
    for name, tensor in model.state_dict().items():
        if "lora_" in name:
            continue
        base[name.removeprefix("base_model.model.").replace(".base_layer.", ".")] = tensor
    assert base.keys() == fresh.keys()
    assert all(torch.equal(base[k], fresh[k]) for k in fresh)
    saved = load_file(str(result.output_dir / "adapter_model.safetensors"))
    assert saved and all("lora_A" in k or "lora_B" in k for k in saved)
    lora_b = [v for k, v in saved.items() if "lora_B" in k]
    assert all(v.abs().sum() > 0 for v in lora_b)  # B starts at zero: every one was trained


def test_plain_peft_reload_equals_llm_tuning(trained, tiny_model):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    result, _ = trained
    plain = PeftModel.from_pretrained(
        AutoModelForCausalLM.from_pretrained(tiny_model), str(result.output_dir)
    )
    plain.eval()
    ours, _ = load_with_adapters(tiny_model, [str(result.output_dir)], device="cpu")
    assert torch.allclose(logits(plain), logits(ours), atol=1e-6)
    base = AutoModelForCausalLM.from_pretrained(tiny_model).eval()
    assert not torch.allclose(logits(base), logits(ours), atol=1e-3)  # the adapter does something


def test_adapter_at_weight_zero_is_the_base_model(trained, tiny_model):
    from transformers import AutoModelForCausalLM

    result, _ = trained
    zero, _ = load_with_adapters(tiny_model, [f"{result.output_dir}:0"], device="cpu")
    base = AutoModelForCausalLM.from_pretrained(tiny_model).eval()
    assert torch.allclose(logits(zero), logits(base), atol=1e-6)


def test_continue_from_previous_adapter(trained, tiny_model, data_file, tmp_path, monkeypatch):
    result, _ = trained
    earlier = result.output_dir
    earlier_weights = load_file(str(earlier / "adapter_model.safetensors"))
    expected, _ = load_with_adapters(tiny_model, [str(earlier)], device="cpu")
    start = {}
    original = sft.build_model

    def capture(cfg):
        model = original(cfg)
        model.eval()
        start["logits"] = logits(model)
        model.train()
        return model

    monkeypatch.setattr(sft, "build_model", capture)
    out = tmp_path / "continued"
    sft.run(quick(tiny_model, data_file, out, max_steps=3, previous_lora_weights=str(earlier)))
    assert torch.allclose(start["logits"], logits(expected), atol=1e-6)
    new = load_file(str(out / "adapter_model.safetensors"))
    assert new.keys() == earlier_weights.keys()
    assert any(not torch.equal(new[k], earlier_weights[k]) for k in new)
    unchanged = load_file(str(earlier / "adapter_model.safetensors"))
    assert all(torch.equal(unchanged[k], earlier_weights[k]) for k in unchanged)  # the earlier one is kept


def test_resume_from_checkpoint_equals_uninterrupted(tiny_model, data_file, tmp_path):
    whole = tmp_path / "whole"
    sft.run(quick(tiny_model, data_file, whole, max_steps=4, save_steps=2, per_device_train_batch_size=2))
    assert (whole / "checkpoint-2").is_dir() and (whole / "checkpoint-4").is_dir()
    resumed = tmp_path / "resumed"
    resumed.mkdir()
    shutil.copytree(whole / "checkpoint-2", resumed / "checkpoint-2")
    result = sft.run(quick(tiny_model, data_file, resumed, max_steps=4, save_steps=2, per_device_train_batch_size=2,
                           resume_from_checkpoint="latest"))  # fmt: skip
    assert result.steps == 4
    logs = [json.loads((d / "training_log.json").read_text()) for d in (whole, resumed)]
    steps = [[r["step"] for r in log["log"] if "loss" in r] for log in logs]
    assert steps == [[1, 2, 3, 4]] * 2  # steps 1-2 carried over from the checkpoint
    assert logs[1]["summary"]["train_loss"] == pytest.approx(logs[0]["summary"]["train_loss"], rel=1e-9)
    a = load_file(str(whole / "adapter_model.safetensors"))
    b = load_file(str(resumed / "adapter_model.safetensors"))
    assert all(torch.allclose(a[k], b[k], atol=1e-5) for k in a)


def test_tensorboard_and_eval_split(tiny_model, data_file, tmp_path):
    out = tmp_path / "tb"
    result = sft.run(quick(tiny_model, data_file, out, max_steps=2, per_device_train_batch_size=2, eval_split=0.25,
                           report_to="tensorboard"))  # fmt: skip
    assert list((out / "runs").rglob("events.out.tfevents.*"))
    assert result.eval_loss is not None and result.eval_loss > 0
    evaluations = [r for r in result.log if "eval_loss" in r]
    steps = [r["step"] for r in evaluations]
    assert steps[-1] == 2 and len(steps) == len(set(steps)), steps  # the last step's evaluation is not rerun
    assert result.eval_loss == evaluations[-1]["eval_loss"]


@pytest.mark.parametrize(
    "flags, message",
    [
        ({}, "--tokenized_dataset FOLDER or --data FILE"),
        ({"data": "a.jsonl", "tokenized_dataset": "b"}, "not both"),
        ({"data": "a.jsonl", "eval_split": 1.5}, "--eval_split"),
        ({"data": "a.jsonl", "fp16": True, "bf16": True}, "--fp16 and --bf16"),
        ({"data": "a.jsonl", "lora_rank": 0}, "--lora_rank"),
    ],
)
def test_bad_train_configs(flags, message):
    with pytest.raises(ConfigError, match=message):
        TrainConfig(**flags)


def test_unknown_tokenized_dataset_name(tiny_model, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError, match="no tokenized folder"):
        sft.run(TrainConfig(model=tiny_model, tokenized_dataset="nothing_here", report_to="none"))


def test_continue_from_a_weighted_mix_of_adapters(tiny_model, data_file, tmp_path):
    from tiny_models import random_adapter

    one = random_adapter(tiny_model, tmp_path / "one", rank=4, seed=1)
    two = random_adapter(tiny_model, tmp_path / "two", rank=8, seed=2)
    out = tmp_path / "mixed"
    cfg = quick(tiny_model, data_file, out, max_steps=1, previous_lora_weights=[f"{one}:0.7", f"{two}:0.3"])
    sft.run(cfg)
    config = json.loads((out / "adapter_config.json").read_text())
    assert config["r"] == 12  # `cat` (the default) stacks the ranks: the mix is exact, then trained
    assert load_file(out / "adapter_model.safetensors")


def test_a_single_previous_adapter_may_be_a_plain_string(tiny_model, data_file, tmp_path):
    cfg = quick(tiny_model, data_file, tmp_path, previous_lora_weights="weights/x")
    assert cfg.previous_lora_weights == ["weights/x"]


def test_tokenized_folder_of_another_model_warns(tiny_model, other_model, data_file, tmp_path, caplog):
    from llm_tuning.data.tokenize import TokenizeConfig
    from llm_tuning.data.tokenize import run as tokenize

    folder = tokenize(TokenizeConfig(input_file=str(data_file), model=other_model, prompt_key="q", target_key="a",
                                     output_dir=str(tmp_path / "tok"))).path  # fmt: skip
    with caplog.at_level("WARNING"):
        sft.check_tokenized_for(folder, tiny_model)
    assert "was tokenized for model" in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING"):
        sft.check_tokenized_for(folder, other_model)
    assert caplog.text == ""
