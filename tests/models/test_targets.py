"""What find_targets picks on tiny random models: linear subclasses, no containers, experts, routers, Mamba."""

from __future__ import annotations

import re

import pytest
import torch
from arch_configs import tiny_config

from llm_tuning.config import ConfigError, LoraOptions
from llm_tuning.models.lora import lora_config
from llm_tuning.models.targets import (
    EXPERTS,
    ROUTER,
    SHARED,
    find_targets,
    is_linear,
    module_target_spec,
    shared_weight_groups,
    targets_by_name,
)


def tiny(arch: str):
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    return AutoModelForCausalLM.from_config(tiny_config(arch, vocab_size=256))


def peft_matches(model, spec) -> set[str]:
    """The module names PEFT's own matching rule picks for a target_modules value."""
    from peft import LoraConfig
    from peft.tuners.tuners_utils import check_target_module_exists

    config = LoraConfig(target_modules=spec)
    return {name for name, _ in model.named_modules() if check_target_module_exists(config, name)}


def test_falcon_linear_subclass_is_found():
    model = tiny("falcon")
    targets = find_targets(model)
    assert {"query_key_value", "dense", "dense_h_to_4h", "dense_4h_to_h"} <= set(targets.short_names())
    assert all(type(model.get_submodule(p)).__name__ == "FalconLinear" for p in targets.modules)


def test_numbered_linears_get_a_regex_that_hits_no_container():
    """CTRL's feed-forward is nn.Sequential(Linear, ReLU, Linear): names ffn.0 / ffn.2; a bare '0' would
    make PEFT match transformer.h.0, a whole decoder layer."""
    model = tiny("ctrl")
    targets = find_targets(model)
    spec = module_target_spec(model, targets.modules)
    assert isinstance(spec, str) and peft_matches(model, spec) == set(targets.modules)
    assert all(is_linear(model.get_submodule(p)) for p in peft_matches(model, spec))
    assert "transformer.h.0" not in peft_matches(model, spec)


def test_short_names_where_they_are_exact():
    model = tiny("llama")
    spec = module_target_spec(model, find_targets(model).modules)
    assert spec == ["down_proj", "gate_proj", "k_proj", "o_proj", "q_proj", "up_proj", "v_proj"]


@pytest.mark.parametrize("arch", ["mixtral", "qwen2_moe", "deepseek_v3", "jetmoe"])
def test_experts_are_parameters_and_routers_stay_frozen(arch):
    model = tiny(arch)
    targets = find_targets(model)
    assert targets.parameters and all(model.get_parameter(p).ndim == 3 for p in targets.parameters)
    assert EXPERTS in targets.kinds.values() and ROUTER not in targets.kinds.values()
    with_router = find_targets(model, on_router=True)
    assert ROUTER in with_router.kinds.values()


def test_shared_experts_and_dense_first_layer_are_adapted():
    targets = find_targets(tiny("deepseek_v3"))
    kinds = {path: kind for path, kind in targets.kinds.items()}
    assert kinds["model.layers.0.mlp.down_proj"] == "dense MLP"
    assert kinds["model.layers.1.mlp.shared_experts.down_proj"] == SHARED


def test_peft_keeps_dense_and_shared_targets_on_a_v5_moe():
    """PEFT would rename down_proj into an expert parameter on DeepSeek-V3 and drop the dense MLP."""
    from llm_tuning.models.lora import attach_lora

    model = tiny("deepseek_v3")
    peft_model = attach_lora(model, lora_config(model, LoraOptions(lora_rank=2)))
    wrapped = {n for n, m in peft_model.named_modules() if hasattr(m, "lora_A") and len(m.lora_A)}
    assert any(n.endswith("layers.0.mlp.down_proj") for n in wrapped)
    assert any(n.endswith("shared_experts.down_proj") for n in wrapped)


def test_mamba_leaves_out_what_peft_refuses():
    targets = find_targets(tiny("mamba"))
    assert targets.modules and not {"out_proj", "conv1d"} & set(targets.short_names())
    assert any("out_proj" in p for paths in targets.skipped.values() for p in paths)


def test_expert_lora_refuses_dropout_with_the_fix():
    with pytest.raises(ConfigError, match="--lora_dropout 0"):
        lora_config(tiny("mixtral"), dropout=0.1)


def test_user_names_reach_expert_weights_and_unknown_names_list_valid_ones():
    model = tiny("mixtral")
    targets = targets_by_name(model, ["q_proj", "gate_up_proj"])
    assert all(p.endswith("q_proj") for p in targets.modules)
    assert targets.parameters and all(p.endswith("experts.gate_up_proj") for p in targets.parameters)
    with pytest.raises(ConfigError, match=re.escape("--target_modules nope not found")):
        targets_by_name(model, ["nope"])


def test_shared_weights_are_detected_only_when_adapted():
    from peft import LoraConfig, get_peft_model

    model = tiny("zamba")
    assert shared_weight_groups(model) == []
    config = LoraConfig(r=2, target_modules=["q_proj"])
    groups = shared_weight_groups(get_peft_model(model, config))
    assert groups and all(len(group) == 2 for group in groups)


def test_expert_adapters_are_refused_by_mixing_with_the_alternatives():
    from peft import LoraConfig

    from llm_tuning.models.adapters import check_mixable

    moe = LoraConfig(
        r=2, target_modules=["q_proj"], target_parameters=["model.layers.0.mlp.experts.down_proj"]
    )
    with pytest.raises(ConfigError, match="fused expert weights.*llm-tuning merge"):
        check_mixable({"one": moe, "two": moe}, "cat")


def test_summary_counts_add_up_to_the_trainable_parameters():
    """Nested expert wrappers (gate_up_proj inside down_proj) must not be counted twice."""
    import re as regex

    from llm_tuning.models.lora import adapted_summary, attach_lora, count_parameters

    model = tiny("qwen2_moe")
    config = lora_config(model, LoraOptions(lora_rank=2))
    peft_model = attach_lora(model, config)
    lines = adapted_summary(peft_model, config.llm_tuning_targets)
    counted = sum(
        int(regex.search(r"([\d,]+) trainable", line)[1].replace(",", ""))
        for line in lines
        if "LoRA on" in line
    )
    assert counted == count_parameters(peft_model)[0]
