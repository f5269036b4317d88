"""The adapter check every loading path calls: damaged folders, other shapes, another base, and the record.

pytest tests/models/test_adapter_check.py -q
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
from tiny_models import random_adapter

from llm_tuning.config import ConfigError
from llm_tuning.data.read import DataError
from llm_tuning.models.adapter_check import (
    BASE_RECORD,
    base_fingerprint,
    check_adapter_fits,
    check_adapter_folder,
    portable_name,
    record_base_model,
)


def _model(path: str, dtype=None):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(path, dtype=dtype)


@pytest.fixture()
def adapter(tiny_model, tmp_path) -> Path:
    folder = Path(random_adapter(tiny_model, tmp_path / "adapter"))
    record_base_model(folder, tiny_model, _model(tiny_model))
    return folder


def test_fingerprint_ignores_precision_but_not_the_weights(tiny_model, other_model):
    import torch

    assert base_fingerprint(_model(tiny_model)) == base_fingerprint(_model(tiny_model, torch.bfloat16))
    assert base_fingerprint(_model(tiny_model)) != base_fingerprint(_model(other_model))


def test_record_names_the_base_portably(adapter, tiny_model):
    record = json.loads((adapter / BASE_RECORD).read_text())
    assert record["base_model"] == str(Path(tiny_model).resolve()) and len(record["base_fingerprint"]) == 16
    config = json.loads((adapter / "adapter_config.json").read_text())
    assert config["base_model_name_or_path"] == str(Path(tiny_model).resolve())
    # the embedded model is recorded by name, and by hub id for plain PEFT on another machine
    assert portable_name("smollm2-135m-instruct") == "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert portable_name("Qwen/Qwen2.5-0.5B") == "Qwen/Qwen2.5-0.5B"


def test_the_same_base_passes_and_another_base_with_the_same_shapes_is_refused(
    adapter, tiny_model, other_model
):
    check_adapter_fits(_model(tiny_model), adapter)
    with pytest.raises(ConfigError, match="same layer shapes, different weights"):
        check_adapter_fits(_model(other_model), adapter, "--sft_adapter")


def test_without_a_record_another_base_is_warned_about(adapter, other_model, caplog):
    (adapter / BASE_RECORD).unlink()
    with caplog.at_level(logging.WARNING):
        check_adapter_fits(_model(other_model), adapter)
    assert "no fingerprint to compare" in caplog.text


def test_damage_is_named_by_file(adapter):
    weights = adapter / "adapter_model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(data[:-10])
    with pytest.raises(DataError, match="adapter_model.safetensors: is not a readable safetensors file"):
        check_adapter_folder(adapter)
    weights.write_bytes(data)
    config = json.loads((adapter / "adapter_config.json").read_text())
    (adapter / "adapter_config.json").write_text(json.dumps({**config, "r": 0}))
    with pytest.raises(DataError, match="field 'r': must be a positive whole number"):
        check_adapter_folder(adapter)
    (adapter / "adapter_config.json").write_text(json.dumps({**config, "peft_type": "IA3"}))
    with pytest.raises(DataError, match="is a IA3 adapter"):
        check_adapter_folder(adapter)
    (adapter / "adapter_config.json").write_text(json.dumps(config))
    (adapter / BASE_RECORD).write_text("{broken")  # only the record is damaged: the adapter still loads
    assert check_adapter_folder(adapter).base is None
