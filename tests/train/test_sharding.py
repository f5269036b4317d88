"""train/sharding.py without launching processes: the TrainingArguments flags for CPU processes under each
launcher, and the one-line refusal of a bf16 DeepSpeed config on CPU processes (exit 2, before loading)."""

from __future__ import annotations

import pytest

from llm_tuning.cli import main
from llm_tuning.config import ConfigError
from llm_tuning.train.sharding import check_launch, cpu_process_flags


def test_cpu_processes_use_cpu_except_under_deepspeed(monkeypatch):
    monkeypatch.delenv("ACCELERATE_USE_DEEPSPEED", raising=False)
    assert cpu_process_flags(True) == {"use_cpu": True} and cpu_process_flags(False) == {"use_cpu": False}
    monkeypatch.setenv("ACCELERATE_USE_DEEPSPEED", "true")
    assert cpu_process_flags(True) == {"use_cpu": False, "ddp_backend": "gloo"}  # DeepSpeed's CPU accelerator
    assert cpu_process_flags(False) == {"use_cpu": False}  # GPUs: accelerate's own choice


def test_bf16_deepspeed_config_on_cpu_is_refused(monkeypatch):
    monkeypatch.setenv("ACCELERATE_USE_DEEPSPEED", "true")
    monkeypatch.setenv("ACCELERATE_MIXED_PRECISION", "bf16")
    with pytest.raises(ConfigError, match="deepspeed_zero2_cpu.yaml"):
        check_launch(cpu=True)
    check_launch(cpu=False)  # on GPUs bf16 is the point
    monkeypatch.setenv("ACCELERATE_MIXED_PRECISION", "no")
    check_launch(cpu=True)


def test_train_refuses_bf16_deepspeed_on_cpu_with_one_line(monkeypatch, tmp_path, capsys):
    monkeypatch.setenv("ACCELERATE_USE_DEEPSPEED", "true")
    monkeypatch.setenv("ACCELERATE_MIXED_PRECISION", "bf16")
    rows = tmp_path / "rows.jsonl"
    rows.write_text('{"q": "1 + 1?", "a": "2"}\n', encoding="utf-8")
    # an unknown model: the refusal comes before any loading, so the model is never looked up
    code = main(["train", "--model", "no-such-model-xyz", "--data", str(rows), "--device", "cpu",
                 "--output_dir", str(tmp_path / "out")])  # fmt: skip
    err = capsys.readouterr().err.strip().splitlines()
    assert (
        code == 2
        and len(err) == 1
        and err[0].startswith("llm-tuning train: error:")
        and "DeepSpeed" in err[0]
    )
    assert not (tmp_path / "out").exists()
