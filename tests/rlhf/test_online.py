"""`llm-tuning ppo` and `grpo` on the tiny model: files, invariants (only adapters train, the reference is
the base with adapters off), exact resume, and reward functions that fail."""

from __future__ import annotations

import json
import math

import pytest
import torch
from safetensors.torch import load_file

from llm_tuning.cli import main
from llm_tuning.models.load import load_model
from llm_tuning.rlhf.common import reference_context
from llm_tuning.rlhf.grpo import GRPOConfig
from llm_tuning.rlhf.grpo import run as run_grpo
from llm_tuning.rlhf.loop import load_policy
from llm_tuning.rlhf.ppo import PPOConfig, make_step, value_head_for
from llm_tuning.rlhf.ppo_math import FixedKLController


def test_ppo_command_with_reward_model_and_function(
    tiny_model, prompts_file, reward_model_dir, reward_file, tmp_path
):
    out = tmp_path / "ppo"
    code = main(["ppo", "--model", tiny_model, "--data", str(prompts_file), "--output_dir", str(out),
                 "--reward_model", reward_model_dir, "--reward", f"{reward_file}:length_reward", "--max_steps", "2",
                 "--batch_size", "4", "--mini_batch_size", "2", "--ppo_epochs", "2", "--max_new_tokens", "6",
                 "--lora_rank", "4", "--save_steps", "1", "--save_total_limit", "1", "--suppress_eos_first"])  # fmt: skip
    assert code == 0
    for name in ("adapter_model.safetensors", "value_head.safetensors", "llm_tuning_config.yaml", "training_log.json",
                 "training_curves.png", "checkpoint-2/optimizer.pt", "checkpoint-2/value_head.safetensors"):  # fmt: skip
        assert (out / name).exists(), name
    assert not (out / "checkpoint-1").exists()  # --save_total_limit 1
    assert list((out / "runs").iterdir())
    weights = load_file(str(out / "adapter_model.safetensors"))
    assert weights and all(
        ".lora_" in k for k in weights
    )  # the policy adapter only: no reward / reference copies
    log = json.loads((out / "training_log.json").read_text())["log"]
    assert [r["step"] for r in log] == [1, 2]
    assert {
        "reward",
        "reward/model",
        "reward/length_reward",
        "kl",
        "kl_coef",
        "loss/policy",
        "loss/value",
    } <= set(log[0])
    assert all(0.0 <= r["reward/model"] <= 1.0 for r in log)  # sigmoid of the reward model's score


def test_a_ppo_step_trains_adapter_and_value_head_only(tiny_model, prompts_file, reward_file, tmp_path):
    cfg = PPOConfig(model=tiny_model, data=str(prompts_file), reward=[f"{reward_file}:length_reward"], batch_size=4,
                    mini_batch_size=2, max_new_tokens=6, lora_rank=4, learning_rate=1e-2, output_dir=str(tmp_path))  # fmt: skip
    policy = load_policy(cfg)
    head = value_head_for(policy.model)
    params = [p for p in policy.model.parameters() if p.requires_grad] + list(head.parameters())
    before = {n: p.detach().clone() for n, p in policy.model.named_parameters()}
    step = make_step(cfg, policy, head, torch.optim.AdamW(params, lr=1e-2), FixedKLController(0.1))
    step(0, policy.rows[:4])
    changed = {n for n, p in policy.model.named_parameters() if not torch.equal(p, before[n])}
    assert changed and all(".lora_" in n and ".default." in n for n in changed)
    assert head.weight.abs().sum() > 0


def test_reference_is_the_base_with_adapters_off(tiny_model, prompts_file, tmp_path):
    cfg = GRPOConfig(
        model=tiny_model, data=str(prompts_file), reward=["format"], lora_rank=4, output_dir=str(tmp_path)
    )
    policy = load_policy(cfg)
    for name, p in policy.model.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(p, std=0.5)  # a trained-looking adapter, so policy != base
    ids = torch.tensor([[5, 17, 42, 99, 7]])
    plain = load_model(tiny_model)(input_ids=ids).logits
    with torch.no_grad():
        with reference_context(policy.model, policy.reference):
            reference = policy.model(input_ids=ids).logits
        adapted = policy.model(input_ids=ids).logits
    assert policy.reference == "base"
    assert torch.allclose(reference, plain, atol=1e-6)
    assert not torch.allclose(adapted, plain, atol=1e-3)


def test_grpo_command_and_initial_reference(tiny_model, prompts_file, reward_file, tmp_path):
    first, second = tmp_path / "first", tmp_path / "second"
    args = ["grpo", "--model", tiny_model, "--data", str(prompts_file), "--reward", "exact_match", "--reward",
            f"{reward_file}:length_reward", "--max_steps", "2", "--batch_size", "2", "--num_generations", "3",
            "--mini_batch_size", "3", "--max_new_tokens", "6", "--lora_rank", "4", "--learning_rate", "1e-2"]  # fmt: skip
    assert main([*args, "--output_dir", str(first)]) == 0
    log = json.loads((first / "training_log.json").read_text())
    assert {"reward", "reward/exact_match", "reward/length_reward", "kl", "reward_std"} <= set(log["log"][0])
    assert log["summary"]["reference"] == "base"
    assert main([*args, "--output_dir", str(second), "--sft_adapter", str(first), "--max_steps", "1"]) == 0
    assert json.loads((second / "training_log.json").read_text())["summary"]["reference"] == "initial"
    start, end = (
        load_file(str(first / "adapter_model.safetensors")),
        load_file(str(second / "adapter_model.safetensors")),
    )
    assert start.keys() == end.keys() and any(not torch.equal(start[k], end[k]) for k in start)


def test_grpo_resumed_from_a_checkpoint_equals_an_uninterrupted_run(
    tiny_model, prompts_file, reward_file, tmp_path
):
    common = dict(model=tiny_model, data=str(prompts_file), reward=[f"{reward_file}:length_reward"], max_steps=2,
                  batch_size=2, num_generations=3, mini_batch_size=2, num_iterations=2, max_new_tokens=6,
                  lora_rank=4, learning_rate=1e-2, save_steps=1, report_to="none")  # fmt: skip
    run_grpo(GRPOConfig(**common, output_dir=str(tmp_path / "whole")))
    run_grpo(GRPOConfig(**common, output_dir=str(tmp_path / "resumed"),
                        resume_from_checkpoint=str(tmp_path / "whole" / "checkpoint-1")))  # fmt: skip
    whole = load_file(str(tmp_path / "whole" / "adapter_model.safetensors"))
    resumed = load_file(str(tmp_path / "resumed" / "adapter_model.safetensors"))
    assert all(torch.equal(whole[k], resumed[k]) for k in whole)
    logs = [json.loads((tmp_path / d / "training_log.json").read_text())["log"] for d in ("whole", "resumed")]
    assert logs[0] == logs[1]


@pytest.mark.parametrize(("function", "message"), [("broken", "broken raised ZeroDivisionError"),
                                                   ("not_a_number", "not_a_number returned 'good'")])  # fmt: skip
def test_a_failing_reward_function_stops_the_run(
    tiny_model, prompts_file, reward_file, tmp_path, capsys, function, message
):
    code = main(["grpo", "--model", tiny_model, "--data", str(prompts_file), "--reward", f"{reward_file}:{function}",
                 "--max_steps", "1", "--batch_size", "2", "--num_generations", "2", "--max_new_tokens", "4",
                 "--output_dir", str(tmp_path / "out")])  # fmt: skip
    assert code == 2
    err = capsys.readouterr().err
    assert "llm-tuning grpo: error: reward function" in err and message in err
    assert not (tmp_path / "out" / "adapter_model.safetensors").exists()


def test_ppo_needs_a_reward(tiny_model, prompts_file, capsys):
    assert main(["ppo", "--model", tiny_model, "--data", str(prompts_file)]) == 2
    assert "give a reward" in capsys.readouterr().err


def test_rloo_command_runs_a_step_on_the_grpo_loop(tiny_model, prompts_file, reward_file, tmp_path):
    """RLOO shares GRPO's rollouts and updates; one step trains the adapter only and logs the rewards."""
    out = tmp_path / "rloo"
    # length_reward differs between replies, so the leave-one-out advantages are not all 0
    args = ["rloo", "--model", tiny_model, "--data", str(prompts_file), "--reward", "exact_match", "--reward",
            f"{reward_file}:length_reward",
            "--max_steps", "1", "--batch_size", "2", "--num_generations", "3", "--mini_batch_size", "6",
            "--max_new_tokens", "6", "--lora_rank", "4", "--learning_rate", "1e-2", "--report_to", "none",
            "--output_dir", str(out)]  # fmt: skip
    assert main(args) == 0
    log = json.loads((out / "training_log.json").read_text())
    record = log["log"][0]
    assert {"reward", "reward/exact_match", "reward/length_reward", "kl", "loss/policy"} <= set(record)
    assert all(math.isfinite(v) for v in record.values())
    weights = load_file(str(out / "adapter_model.safetensors"))
    assert weights and all(".lora_" in k for k in weights)
    assert any(v.abs().sum() > 0 for k, v in weights.items() if "lora_B" in k)  # B starts at 0: it moved
