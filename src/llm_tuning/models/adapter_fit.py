"""Check that a LoRA adapter fits a base model before PEFT loads it, so that an adapter trained on another
base model is one clear error naming the adapter, the layer and both shapes (PEFT's own failure is a long
state-dict traceback, or silence when a layer name is missing).

    check_adapter_fits(model, spec, model_name)   # raises ConfigError
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from llm_tuning.config import ConfigError
from llm_tuning.models.adapters import AdapterSpec

PREFIX = "base_model.model."


def adapter_shapes(folder: str | Path) -> dict[str, tuple[int, ...]]:
    """{tensor name: shape} of an adapter folder's safetensors file, read from its header only."""
    from safetensors import safe_open

    path = Path(folder) / "adapter_model.safetensors"
    if not path.is_file():
        return {}  # an old .bin adapter: PEFT reports what does not fit
    with safe_open(str(path), framework="pt") as f:
        return {name: tuple(f.get_slice(name).get_shape()) for name in f.keys()}


def _trained_on(folder: str | Path) -> str:
    try:
        config = json.loads((Path(folder) / "adapter_config.json").read_text(encoding="utf-8"))
        return str(config.get("base_model_name_or_path") or "an unnamed model")
    except (OSError, ValueError):
        return "an unknown model"


def check_adapter_fits(model: Any, spec: AdapterSpec, model_name: str) -> None:
    """Raise a ConfigError if a LoRA layer of `spec` has no matching layer in `model` or the wrong shape."""
    modules = dict(model.named_modules())
    for name, shape in adapter_shapes(spec.path).items():
        if ".lora_A." not in name and ".lora_B." not in name:
            continue
        path = name.removeprefix(PREFIX).split(".lora_")[0]
        module = modules.get(path)
        problem = None
        if module is None or not hasattr(module, "in_features"):
            problem = f"it has LoRA weights for layer {path!r}, which this model lacks"
        else:
            expected = module.in_features if ".lora_A." in name else module.out_features
            got = shape[1] if ".lora_A." in name else shape[0]
            if got != expected:
                problem = f"layer {path!r} has {expected} features in this model, {got} in the adapter"
        if problem:
            raise ConfigError(f"--adapter {spec.name}={spec.path} does not fit --model {model_name}: {problem}; it "
                              f"was trained on {_trained_on(spec.path)}: pass that model as --model")  # fmt: skip
