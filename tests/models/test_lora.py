"""LoRA target detection on tiny random Llama, Qwen2, Mistral and GPT-2; bad --target_modules names."""

from __future__ import annotations

import pytest
import torch

from llm_tuning.config import ConfigError, LoraOptions
from llm_tuning.models.lora import attach_lora, count_parameters, find_lora_targets, lora_config

PROJECTIONS = ["down_proj", "gate_proj", "k_proj", "o_proj", "q_proj", "up_proj", "v_proj"]
EXPECTED = {
    "llama": PROJECTIONS,
    "qwen2": PROJECTIONS,
    "mistral": PROJECTIONS,
    "gpt2": ["c_attn", "c_fc", "c_proj"],
}


@pytest.fixture(scope="module", params=sorted(EXPECTED))
def arch_model(request, tmp_path_factory):
    """(arch, model) loaded through llm-tuning from a saved tiny random folder."""
    from tiny_models import build_model

    from llm_tuning.models.load import load_model

    folder = build_model(tmp_path_factory.mktemp(request.param), request.param, vocab_size=128)
    return request.param, load_model(str(folder), device="cpu", for_training=True)


def test_targets_are_every_block_projection(arch_model):
    arch, model = arch_model
    targets = find_lora_targets(model)
    assert targets == EXPECTED[arch]
    assert not {"lm_head", "wte", "wpe", "embed_tokens"} & set(targets)


def test_lora_wraps_only_block_layers_and_trains(arch_model):
    arch, model = arch_model
    peft_model = attach_lora(model, lora_config(model, LoraOptions(lora_rank=4)))
    try:
        wrapped = {name for name, m in peft_model.named_modules() if hasattr(m, "lora_A")}
        assert wrapped and all(".layers." in n or ".h." in n for n in wrapped)
        assert not any("lm_head" in n or "embed" in n or "wte" in n for n in wrapped)
        trainable = [n for n, p in peft_model.named_parameters() if p.requires_grad]
        assert trainable and all("lora_" in n for n in trainable)
        assert 0 < count_parameters(peft_model)[0] < count_parameters(peft_model)[1]
        logits = peft_model(input_ids=torch.tensor([[3, 4, 5, 6]])).logits  # (1, 4, vocab)
        assert logits.shape == (1, 4, 128) and torch.isfinite(logits).all()
    finally:
        peft_model.unload()  # the module-scoped model is shared: take the LoRA layers off again


def test_explicit_target_modules(arch_model):
    arch, model = arch_model
    name = EXPECTED[arch][0]
    config = lora_config(model, LoraOptions(lora_rank=2, target_modules=f" {name} ,"))
    assert set(config.target_modules) == {name}
    assert config.lora_alpha == 4  # default alpha = 2 x rank


def test_invalid_target_module_lists_valid_ones(arch_model):
    arch, model = arch_model
    with pytest.raises(ConfigError) as info:
        lora_config(model, LoraOptions(target_modules="query_key_value"))
    message = str(info.value)
    assert "--target_modules query_key_value" in message
    assert all(name in message for name in EXPECTED[arch])
