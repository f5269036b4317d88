"""Model resolution, device / precision choice and tokenizer loading."""

from __future__ import annotations

import pytest
import torch

from llm_tuning.models.load import load_model, load_tokenizer, mixed_precision_flags, pick_device, pick_dtype
from llm_tuning.models.resolve import ModelNotFoundError, resolve_model


def test_cpu_precision_is_fp32_unless_asked():
    cpu = torch.device("cpu")
    assert pick_dtype("auto", cpu) == torch.float32
    assert pick_dtype("bf16", cpu) == torch.bfloat16 and pick_dtype("float16", cpu) == torch.float16
    assert pick_device("cpu") == torch.device("cpu")


@pytest.mark.skipif(torch.cuda.is_available(), reason="CPU behaviour")
def test_half_precision_flags_ignored_on_cpu(caplog):
    assert mixed_precision_flags(torch.float32, fp16=True) == {"fp16": False, "bf16": False}
    assert "ignored on CPU" in caplog.text


def test_resolve_folder_hub_id_and_errors(tiny_model, tmp_path):
    assert resolve_model(tiny_model) == tiny_model
    assert resolve_model("Qwen/Qwen2.5-0.5B-Instruct") == "Qwen/Qwen2.5-0.5B-Instruct"  # left to transformers
    (tmp_path / "no_config").mkdir()
    with pytest.raises(ModelNotFoundError, match="config.json"):
        resolve_model(str(tmp_path / "no_config"))
    with pytest.raises(ModelNotFoundError, match="smollm2-135m-instruct"):
        resolve_model("./not/a/folder")


def test_tokenizer_gets_a_pad_token_and_side(tiny_model, tmp_path):
    import shutil

    from transformers import AutoTokenizer

    folder = tmp_path / "no_pad"
    shutil.copytree(tiny_model, folder)
    tok = AutoTokenizer.from_pretrained(folder)
    tok.pad_token = None
    tok.save_pretrained(folder)
    loaded = load_tokenizer(str(folder), padding_side="left")
    assert loaded.pad_token == "<|im_end|>" and loaded.padding_side == "left"


def test_load_model_for_training_and_inference(tiny_model):
    train = load_model(tiny_model, device="cpu", for_training=True)
    infer = load_model(tiny_model, device="cpu")
    assert train.config.use_cache is False and train.dtype == torch.float32
    assert not infer.training


def test_unknown_model_name(tmp_path):
    with pytest.raises(ModelNotFoundError) as info:
        load_tokenizer("no-such-model-xyz")
    assert "no-such-model-xyz" in str(info.value) and "local Hugging Face folder" in str(info.value)
