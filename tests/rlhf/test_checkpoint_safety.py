"""ppo / grpo checkpoints: nothing unpickled, only complete checkpoints of the same run resumed (issue 11)."""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from llm_tuning.checkpoints import DONE
from llm_tuning.config import ConfigError
from llm_tuning.rlhf.grpo import GRPOConfig
from llm_tuning.rlhf.grpo import run as run_grpo
from llm_tuning.rlhf.loop import read_optimizer_file

SRC = Path(__file__).resolve().parents[2] / "src"


class Payload:
    """What a crafted checkpoint holds: unpickling it runs a shell command."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_a_crafted_optimizer_file_is_refused_without_running_it(tmp_path):
    marker = tmp_path / "pwned"
    torch.save({"optimizer": Payload(marker)}, tmp_path / "optimizer.pt")
    with pytest.raises(ConfigError, match=r"optimizer.pt: not a plain tensor file \(refused"):
        read_optimizer_file(tmp_path / "optimizer.pt")
    assert not marker.exists()


def test_a_real_optimizer_file_loads(tmp_path):
    weight = torch.nn.Parameter(torch.ones(3))
    optimizer = torch.optim.AdamW([weight])
    weight.grad = torch.ones(3)
    optimizer.step()
    torch.save({"optimizer": optimizer.state_dict(), "torch_rng": torch.get_rng_state(), "cuda_rng": None},
               tmp_path / "optimizer.pt")  # fmt: skip
    assert read_optimizer_file(tmp_path / "optimizer.pt")["optimizer"]["state"][0]["step"] == 1


def test_every_torch_load_in_the_code_is_weights_only():
    calls = [
        (p, m.group(0))
        for p in SRC.rglob("*.py")
        for m in re.finditer(r"torch\.load\([^)]*\)", p.read_text())
    ]
    assert calls and all("weights_only=True" in call for _, call in calls), calls


def test_grpo_resumes_the_newest_complete_checkpoint_of_its_own_run(
    tiny_model, prompts_file, reward_file, tmp_path
):
    common = dict(model=tiny_model, data=str(prompts_file), reward=[f"{reward_file}:length_reward"], max_steps=2,
                  batch_size=2, num_generations=2, mini_batch_size=2, max_new_tokens=4, lora_rank=4,
                  learning_rate=1e-2, save_steps=1, report_to="none")  # fmt: skip
    whole = tmp_path / "whole"
    run_grpo(GRPOConfig(**common, output_dir=str(whole)))
    assert sorted(p.name for p in whole.glob("checkpoint-*")) == ["checkpoint-1", "checkpoint-2"]
    out = shutil.copytree(whole, tmp_path / "out")
    (out / "checkpoint-2" / DONE).rename(
        out / "checkpoint-2" / ".llm_tuning_writing"
    )  # not complete: skipped
    (out / "adapter_model.safetensors").unlink()
    run_grpo(GRPOConfig(**common, output_dir=str(out), resume_from_checkpoint="latest"))
    a, b = (load_file(str(d / "adapter_model.safetensors")) for d in (whole, out))
    assert all(torch.equal(a[k], b[k]) for k in a)
    with pytest.raises(ConfigError, match=r"belongs to another run \(it differs in --learning_rate\)"):
        run_grpo(
            GRPOConfig(
                **{**common, "learning_rate": 5e-3}, output_dir=str(out), resume_from_checkpoint="latest"
            )
        )
    with pytest.raises(ConfigError, match="holds checkpoints of another run"):
        run_grpo(GRPOConfig(**{**common, "learning_rate": 5e-3}, output_dir=str(out)))


def test_dpo_resumes_only_its_own_complete_checkpoints_and_carries_the_log(tiny_model, pairs_file, tmp_path):
    from llm_tuning.rlhf.dpo import DPOConfig
    from llm_tuning.rlhf.dpo import run as run_dpo

    common = dict(model=tiny_model, data=str(pairs_file), max_steps=4, save_steps=2, lora_rank=4,
                  learning_rate=1e-2, logging_steps=1, per_device_train_batch_size=2, report_to="none")  # fmt: skip
    whole = run_dpo(DPOConfig(**common, output_dir=str(tmp_path / "whole")))
    out = tmp_path / "out"
    out.mkdir()
    shutil.copytree(tmp_path / "whole" / "checkpoint-2", out / "checkpoint-2")
    with pytest.raises(ConfigError, match=r"differs in --beta"):
        run_dpo(DPOConfig(**common, beta=0.5, output_dir=str(out), resume_from_checkpoint="latest"))
    resumed = run_dpo(DPOConfig(**common, output_dir=str(out), resume_from_checkpoint="latest"))
    assert [r["step"] for r in resumed.log if "loss" in r] == [1, 2, 3, 4]
    assert resumed.train_loss == pytest.approx(whole.train_loss, rel=1e-6)
