"""Adapter specs, mixing invariants and their errors, on a tiny random Llama with random LoRA adapters."""

from __future__ import annotations

import pytest
import torch
from tiny_models import random_adapter

from llm_tuning.config import ConfigError
from llm_tuning.models.adapters import (
    AdapterSpec,
    apply_adapters,
    load_adapters,
    mix_adapters,
    mixed_trainable_adapter,
    parse_adapter_spec,
    parse_mix_spec,
    save_adapter_folder,
    use_adapter,
)

INPUT = torch.tensor([[1, 5, 40, 77, 120, 9, 33, 250]])


@pytest.fixture(scope="module")
def adapters(tiny_model, tmp_path_factory) -> dict[str, str]:
    root = tmp_path_factory.mktemp("adapters")
    return {
        "one": random_adapter(tiny_model, root / "one", seed=1),
        "two": random_adapter(tiny_model, root / "two", seed=2),
        "wide": random_adapter(
            tiny_model, root / "wide", rank=8, targets=("k_proj", "o_proj", "up_proj"), seed=3
        ),
        "other": random_adapter(tiny_model, root / "other", targets=("k_proj", "o_proj"), seed=6),
        "rs": random_adapter(tiny_model, root / "rs", seed=4, use_rslora=True),
        "dora": random_adapter(tiny_model, root / "dora", seed=5, use_dora=True),
    }


def base_model(tiny_model: str):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(tiny_model).eval()


@torch.no_grad()
def logits(model) -> torch.Tensor:
    return model(INPUT).logits


def spec(adapters, name: str, weight: float = 1.0) -> AdapterSpec:
    return AdapterSpec(name, adapters[name], weight)


def test_parse_adapter_spec_name_and_weight(adapters):
    folder = adapters["one"]
    assert parse_adapter_spec(folder) == AdapterSpec("one", folder, 1.0)
    assert parse_adapter_spec(f"math={folder}:0.7") == AdapterSpec("math", folder, 0.7)
    assert parse_adapter_spec(f"{folder}:-0.5") == AdapterSpec("one", folder, -0.5)
    with pytest.raises(FileNotFoundError, match="nothing: no such folder"):
        parse_adapter_spec(f"{folder}/nothing:0.5")


def test_parse_mix_spec(adapters):
    known = {n: spec(adapters, n) for n in ("one", "two")}
    name, specs = parse_mix_spec("both=one:0.25,two:0.75", known)
    assert name == "both" and [(s.name, s.weight) for s in specs] == [("one", 0.25), ("two", 0.75)]
    with pytest.raises(ConfigError, match="no adapter named 'c'"):
        parse_mix_spec("x=one:0.5,c:0.5", known)
    with pytest.raises(ConfigError, match="not a number"):
        parse_mix_spec("x=one:half", known)
    with pytest.raises(ConfigError, match="NAME="):
        parse_mix_spec("one:0.5", known)


@pytest.mark.parametrize("method", ["linear", "cat", "svd"])
def test_weight_one_alone_equals_the_adapter(tiny_model, adapters, method):
    alone = logits(apply_adapters(base_model(tiny_model), [spec(adapters, "one")]))
    model = load_adapters(base_model(tiny_model), [spec(adapters, "one"), spec(adapters, "two")])
    # b at weight 0 contributes nothing; a at weight 1 is exactly a
    mix_adapters(model, [spec(adapters, "one"), spec(adapters, "two", 0.0)], method, None, "mix")
    with use_adapter(model, "mix"):
        torch.testing.assert_close(logits(model), alone, atol=1e-5, rtol=1e-5)
    with use_adapter(model, "base"):
        torch.testing.assert_close(logits(model), logits(base_model(tiny_model)))


def test_rslora_adapter_keeps_its_scale_when_mixed(tiny_model, adapters):
    """PEFT would scale the mixed rsLoRA adapter by sqrt(r) a second time."""
    alone = logits(apply_adapters(base_model(tiny_model), [spec(adapters, "rs")]))
    weighted = apply_adapters(
        base_model(tiny_model), [spec(adapters, "rs", 1.0), spec(adapters, "one", 0.0)], "cat"
    )
    torch.testing.assert_close(logits(weighted), alone, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("method", ["linear", "cat", "svd", "ties", "dare_linear"])
def test_mix_differs_from_each_adapter(tiny_model, adapters, method):
    model = load_adapters(base_model(tiny_model), [spec(adapters, "one"), spec(adapters, "two")])
    mix_adapters(model, [spec(adapters, "one", 0.5), spec(adapters, "two", 0.5)], method, 0.7, "mix")
    results = {}
    for name in ("one", "two", "mix", "base"):
        with use_adapter(model, name):
            results[name] = logits(model)
    for name in ("one", "two", "base"):
        assert not torch.allclose(results["mix"], results[name], atol=1e-3), name


@pytest.mark.parametrize(("method", "second", "targets"), [("cat", "wide", 5), ("linear", "other", 4)])
def test_exact_weighted_sum_of_updates_across_targets(tiny_model, adapters, method, second, targets):
    """cat is exact for any ranks; linear is exact where the adapters adapt different modules."""
    model = load_adapters(base_model(tiny_model), [spec(adapters, "one"), spec(adapters, second)])
    mix_adapters(model, [spec(adapters, "one", 0.7), spec(adapters, second, -0.3)], method, None, "mix")
    layers = [m for m in model.modules() if hasattr(m, "get_delta_weight") and "mix" in m.lora_A]
    assert len(layers) == 2 * targets  # the union of both adapters' targets, in 2 layers
    for layer in layers:
        parts = [
            w * layer.get_delta_weight(n) for n, w in (("one", 0.7), (second, -0.3)) if n in layer.lora_A
        ]
        torch.testing.assert_close(layer.get_delta_weight("mix"), sum(parts), atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("method", ["linear", "ties", "dare_linear"])
def test_different_ranks_name_the_methods_that_work(tiny_model, adapters, method):
    model = load_adapters(base_model(tiny_model), [spec(adapters, "one"), spec(adapters, "wide")])
    with pytest.raises(ConfigError, match=r"different ranks .*'one': 4.*'wide': 8.*cat, svd"):
        mix_adapters(model, [spec(adapters, "one", 0.5), spec(adapters, "wide", 0.5)], method, None, "mix")


@pytest.mark.parametrize("method", ["cat", "svd"])
def test_different_ranks_and_targets_mix_with_cat_and_svd(tiny_model, adapters, method):
    model = apply_adapters(
        base_model(tiny_model), [spec(adapters, "one", 0.5), spec(adapters, "wide", 0.5)], method
    )
    assert set(model.peft_config["mix"].target_modules) == {"q_proj", "v_proj", "k_proj", "o_proj", "up_proj"}
    assert torch.isfinite(logits(model)).all()


def test_dora_and_duplicate_names_are_refused(tiny_model, adapters):
    with pytest.raises(ConfigError, match="DoRA"):
        apply_adapters(
            base_model(tiny_model), [spec(adapters, "dora", 0.5), spec(adapters, "one", 0.5)], "cat"
        )
    with pytest.raises(ConfigError, match="names must differ"):
        apply_adapters(base_model(tiny_model), [spec(adapters, "one"), AdapterSpec("one", adapters["two"])])
    with pytest.raises(ConfigError, match="contains 'lora_', PEFT's parameter prefix"):
        apply_adapters(base_model(tiny_model), [AdapterSpec("my_lora_x", adapters["one"])])
    # a short name that is merely part of the prefix is fine (it was refused as "part of 'lora_'")
    assert "a" in apply_adapters(base_model(tiny_model), [AdapterSpec("a", adapters["one"])]).peft_config
    with pytest.raises(ConfigError, match="not valid; choose one of"):
        apply_adapters(base_model(tiny_model), [spec(adapters, "one", 0.5)], "average")


def test_saved_mix_loads_with_plain_peft(tiny_model, adapters, tmp_path):
    from peft import PeftModel

    model = apply_adapters(
        base_model(tiny_model), [spec(adapters, "one", 0.6), spec(adapters, "wide", 0.4)], "cat"
    )
    expected = logits(model)
    save_adapter_folder(model, "mix", tmp_path / "mixed")
    assert sorted(p.name for p in (tmp_path / "mixed").iterdir()) == [
        "adapter_config.json",
        "adapter_model.safetensors",
    ]
    plain = PeftModel.from_pretrained(base_model(tiny_model), tmp_path / "mixed").eval()
    torch.testing.assert_close(logits(plain), expected, atol=1e-5, rtol=1e-5)


def test_mixed_trainable_adapter_starts_at_the_mix_and_trains(tiny_model, adapters):
    specs = [spec(adapters, "one", 0.7), spec(adapters, "wide", 0.3)]
    expected = logits(apply_adapters(base_model(tiny_model), specs, "cat"))
    model = mixed_trainable_adapter(base_model(tiny_model), specs, "cat")
    assert list(model.peft_config) == ["default"]
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)
    model.eval()
    torch.testing.assert_close(logits(model), expected, atol=1e-5, rtol=1e-5)
    model.train()
    model(INPUT, labels=INPUT).loss.backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)


def test_short_names_inside_lora_prefix_mix_like_any_other(tiny_model, adapters):
    """`a` and `r` are letters of 'lora_' (once refused as "part of the prefix"): they load and mix the same."""
    named = [AdapterSpec("one", adapters["one"], 0.5), AdapterSpec("wide", adapters["wide"], 0.5)]
    short = [AdapterSpec("a", adapters["one"], 0.5), AdapterSpec("r", adapters["wide"], 0.5)]
    expected = logits(apply_adapters(base_model(tiny_model), named, "cat"))
    assert torch.allclose(logits(apply_adapters(base_model(tiny_model), short, "cat")), expected, atol=1e-6)
