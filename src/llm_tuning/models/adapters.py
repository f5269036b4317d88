"""Put one or several LoRA adapters on a base model, each with its own weight.

    --adapter weights/math                 one adapter at full strength
    --adapter math=weights/math:0.7 --adapter style=weights/style:0.3 --mix_method linear

A spec is `[name=]folder[:weight]`. Several adapters (or one with a weight other than 1) are combined
with PEFT's `add_weighted_adapter` into one adapter named `mix`.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

MIX_METHODS = ("linear", "cat", "svd", "ties", "ties_svd", "dare_linear", "dare_ties", "magnitude_prune")


@dataclass(frozen=True)
class AdapterSpec:
    name: str
    path: str
    weight: float = 1.0


def parse_adapter_spec(spec: str, index: int = 0) -> AdapterSpec:
    """`[name=]folder[:weight]` -> AdapterSpec; the name defaults to the folder's name."""
    name = None
    if "=" in spec and not Path(spec).exists():
        name, spec = spec.split("=", 1)
    weight = 1.0
    match = re.fullmatch(r"(.+):(-?\d+(?:\.\d*)?(?:e-?\d+)?)", spec)
    if match and not Path(spec).exists():
        spec, weight = match.group(1), float(match.group(2))
    path = Path(spec)
    if not (path / "adapter_config.json").is_file():
        raise FileNotFoundError(f"--adapter {spec}: no adapter_config.json there; pass a folder written by `llm-tuning train`")
    name = name or re.sub(r"\W", "_", path.name) or f"adapter{index}"
    return AdapterSpec(name, str(path), weight)


def apply_adapters(
    model: Any, specs: list[AdapterSpec], method: str = "linear", density: float | None = None
) -> Any:
    """A PeftModel carrying the adapters; several (or a weighted one) are mixed into `mix`."""
    from peft import PeftModel

    if not specs:
        return model
    names = [s.name for s in specs]
    if len(set(names)) != len(names):
        raise ValueError(f"adapter names must differ, got {names}; name them with name=folder")
    peft_model = PeftModel.from_pretrained(model, specs[0].path, adapter_name=specs[0].name)
    for spec in specs[1:]:
        peft_model.load_adapter(spec.path, adapter_name=spec.name)
    if len(specs) == 1 and specs[0].weight == 1.0:
        peft_model.set_adapter(specs[0].name)
    else:
        mix_adapters(peft_model, specs, method, density, "mix")
        peft_model.set_adapter("mix")
    peft_model.eval()
    return peft_model


def mix_adapters(peft_model: Any, specs: list[AdapterSpec], method: str, density: float | None, name: str) -> str:
    """Add a weighted combination of loaded adapters as adapter `name`."""
    if method not in MIX_METHODS:
        raise ValueError(f"--mix_method {method!r} is not valid; choose one of: {', '.join(MIX_METHODS)}")
    kwargs: dict[str, Any] = {}
    if method.startswith(("ties", "dare", "magnitude")):
        kwargs["density"] = 0.5 if density is None else density
    ranks = {peft_model.peft_config[s.name].r for s in specs}
    if method == "linear" and len(ranks) > 1:
        raise ValueError(f"adapters of different ranks {sorted(ranks)} cannot be mixed with 'linear'; use cat or svd")
    peft_model.add_weighted_adapter(
        adapters=[s.name for s in specs], weights=[s.weight for s in specs], adapter_name=name,
        combination_type=method, **kwargs,
    )  # fmt: skip
    logger.info("mixed adapters %s with %s into %r", {s.name: s.weight for s in specs}, method, name)
    return name


def load_with_adapters(
    model: str,
    adapters: list[str] | None = None,
    mix_method: str = "linear",
    density: float | None = None,
    dtype: str = "auto",
    device: str = "auto",
    trust_remote_code: bool = False,
) -> tuple[Any, Any]:
    """(model ready for generation, tokenizer) with the `--adapter` specs applied."""
    from llm_tuning.models.load import load_model, load_tokenizer

    tokenizer = load_tokenizer(model, trust_remote_code)
    base = load_model(model, dtype, device, trust_remote_code)
    specs = [parse_adapter_spec(s, i) for i, s in enumerate(adapters or [])]
    return apply_adapters(base, specs, mix_method, density), tokenizer
