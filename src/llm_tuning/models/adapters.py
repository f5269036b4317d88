"""Put one or several LoRA adapters on a base model, each with its own weight; mix them; train on a mix.

    --adapter weights/math                 one adapter at full strength
    --adapter math=weights/math:0.7 --adapter style=weights/style:0.3 --mix_method linear

A spec is `[name=]folder[:weight]`. Several adapters (or one with a weight other than 1) are combined
with PEFT's `add_weighted_adapter` into one adapter named `mix`. `linear`, `ties`, `dare_*` and
`magnitude_prune` need adapters of one rank; `cat` and the `*svd` methods mix any ranks and any target
modules (`cat` is exact: the mix is the weighted sum of the adapters' updates, with rank = sum of ranks).
"""

from __future__ import annotations

import logging
import math
import os
import re
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llm_tuning.config import ConfigError
from llm_tuning.models.adapter_check import check_adapter_fits, check_adapter_folder

logger = logging.getLogger(__name__)

SAME_RANK_METHODS = ("linear", "ties", "dare_linear", "dare_ties", "magnitude_prune")
ANY_RANK_METHODS = ("cat", "svd", "ties_svd", "dare_linear_svd", "dare_ties_svd", "magnitude_prune_svd")
MIX_METHODS = SAME_RANK_METHODS + ANY_RANK_METHODS
BASE = "base"  # the name that always means "no adapter"
MIX = "mix"  # the name of the mix made from weighted --adapter specs


@dataclass(frozen=True)
class AdapterSpec:
    name: str
    path: str
    weight: float = 1.0


def parse_adapter_spec(spec: str, index: int = 0, flag: str = "--adapter") -> AdapterSpec:
    """`[name=]folder[:weight]` -> AdapterSpec; the name defaults to the folder's name."""
    name = None
    if "=" in spec and not Path(spec).exists():
        name, spec = spec.split("=", 1)
    weight = 1.0
    match = re.fullmatch(r"(.+):(-?\d+(?:\.\d*)?(?:e-?\d+)?)", spec)
    if match and not Path(spec).exists():
        spec, weight = match.group(1), float(match.group(2))
    path = Path(spec)
    check_adapter_folder(path, flag)
    name = name or re.sub(r"\W", "_", path.resolve().name) or f"adapter{index}"
    return AdapterSpec(name, str(path), weight)


def parse_mix_spec(text: str, adapters: dict[str, AdapterSpec]) -> tuple[str, list[AdapterSpec]]:
    """`name=math:0.5,style:0.5` -> (name, specs of the named, already given adapters with these weights)."""
    if "=" not in text:
        raise ConfigError(
            f"--mix {text!r}: write it as NAME=ADAPTER:WEIGHT,ADAPTER:WEIGHT (e.g. both=math:0.5,style:0.5)"
        )
    name, parts = text.split("=", 1)
    specs = []
    for part in filter(None, (p.strip() for p in parts.split(","))):
        adapter, _, weight = part.partition(":")
        if adapter not in adapters:
            raise ConfigError(
                f"--mix {text!r}: no adapter named {adapter!r}; the --adapter names are {sorted(adapters)}"
            )
        try:
            value = float(weight) if weight else 1.0
        except ValueError:
            raise ConfigError(f"--mix {text!r}: weight {weight!r} of {adapter!r} is not a number") from None
        if not math.isfinite(value):
            raise ConfigError(f"--mix {text!r}: weight {weight!r} of {adapter!r} must be a finite number")
        specs.append(AdapterSpec(adapter, adapters[adapter].path, value))
    if not name.strip() or not specs:
        raise ConfigError(f"--mix {text!r}: give a name and at least one ADAPTER:WEIGHT")
    return name.strip(), specs


def _rank(config: Any) -> int:
    return max(config.r, *config.rank_pattern.values()) if config.rank_pattern else config.r


def check_mix_options(method: str, density: float | None, flag: str = "--mix_method") -> None:
    """A mix method we know, and a density in (0, 1] (the share of weights ties / dare keep)."""
    if method not in MIX_METHODS:
        raise ConfigError(f"{flag} {method!r} is not valid; choose one of: {', '.join(MIX_METHODS)}")
    if density is not None and not (math.isfinite(density) and 0 < density <= 1):
        raise ConfigError(f"--mix_density must be in (0, 1], got {density}")


def check_adapter_name(name: str, what: str = "adapter") -> None:
    """Names PEFT accepts: letters, digits, _ and -, not containing its parameter prefix `lora_`."""
    if not re.fullmatch(r"[\w-]+", name):
        raise ConfigError(f"{what} name {name!r} must be letters, digits, _ or - (PEFT forbids dots and spaces); "
                          "name it with --adapter NAME=folder")  # fmt: skip
    if "lora_" in name:  # PEFT finds an adapter's weights by this prefix and refuses names containing it
        raise ConfigError(f"{what} name {name!r} contains 'lora_', PEFT's parameter prefix, which it refuses; "
                          "name it with --adapter NAME=folder")  # fmt: skip
    if name == BASE:
        raise ConfigError(
            f"{BASE!r} means the model without adapters; give that {what} another name (NAME=folder)"
        )


def check_mixable(configs: dict[str, Any], method: str) -> None:
    """Raise a ConfigError saying why these adapter configs cannot be mixed with `method`, and what can."""
    if method not in MIX_METHODS:
        raise ConfigError(f"--mix_method {method!r} is not valid; choose one of: {', '.join(MIX_METHODS)}")
    dora = [name for name, c in configs.items() if getattr(c, "use_dora", False)]
    if dora:
        raise ConfigError(f"adapters {dora} use DoRA, whose magnitude vectors cannot be mixed by weights; "
                         "use each alone at weight 1, or merge them one after the other with `llm-tuning merge`")  # fmt: skip
    experts = [name for name, c in configs.items() if getattr(c, "target_parameters", None)]
    if experts:  # PEFT 0.21's add_weighted_adapter raises on nn.Parameter targets
        raise ConfigError(f"adapters {experts} adapt fused expert weights (a mixture of experts), which PEFT cannot mix by "
                          "weights; use each alone at weight 1, merge them one after the other with `llm-tuning merge`, "
                          "or retrain with --target_modules naming only linear layers (e.g. q_proj,k_proj,v_proj,o_proj)")  # fmt: skip
    kinds = {type(c.target_modules).__name__ for c in configs.values()}
    if len(kinds) > 1:
        raise ConfigError("adapters give target_modules as a regex in some and a list in others, which PEFT cannot "
                         "mix; retrain one with --target_modules as a comma-separated list")  # fmt: skip
    ranks = {name: _rank(c) for name, c in configs.items()}
    if method in SAME_RANK_METHODS and len(set(ranks.values())) > 1:
        raise ConfigError(f"adapters of different ranks {ranks} cannot be mixed with {method!r}, which needs one rank; "
                         f"methods that mix different ranks: {', '.join(ANY_RANK_METHODS)}")  # fmt: skip


def load_adapters(model: Any, specs: list[AdapterSpec], flag: str = "--adapter") -> Any:
    """A PeftModel with every adapter loaded under its name (none active for training)."""
    from peft import PeftModel

    names = [s.name for s in specs]
    if len(set(names)) != len(names):
        raise ConfigError(f"adapter names must differ, got {names}; name them with --adapter NAME=folder")
    for name in names:
        check_adapter_name(name)
    for spec in specs:  # every folder fits this base model before PEFT sees any of them
        check_adapter_fits(model, spec.path, flag)
    from llm_tuning.models.lora import native_targets

    with native_targets():
        peft_model = PeftModel.from_pretrained(model, specs[0].path, adapter_name=specs[0].name)
        for spec in specs[1:]:
            peft_model.load_adapter(spec.path, adapter_name=spec.name)
    peft_model.eval()
    return peft_model


def mix_adapters(
    peft_model: Any, specs: list[AdapterSpec], method: str, density: float | None, name: str, seed: int = 0
) -> str:
    """Add a weighted combination of loaded adapters as adapter `name` (dare_* is seeded, so repeatable)."""
    import torch
    from peft.tuners.lora import LoraLayer

    if name in peft_model.peft_config:
        raise ConfigError(f"cannot name a mix {name!r}: an adapter has that name; choose another")
    check_adapter_name(name, "mix")
    check_mixable({s.name: peft_model.peft_config[s.name] for s in specs}, method)
    kwargs: dict[str, Any] = {}
    if method.startswith(("ties", "dare", "magnitude")):
        kwargs["density"] = 0.5 if density is None else density
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        peft_model.add_weighted_adapter(
            adapters=[s.name for s in specs], weights=[s.weight for s in specs], adapter_name=name,
            combination_type=method, **kwargs,
        )  # fmt: skip
    config = peft_model.peft_config[name]
    if config.use_rslora:  # the mixed A, B already hold every scaling; PEFT would scale by sqrt(r) again
        config.use_rslora = False
        for module in peft_model.modules():
            if isinstance(module, LoraLayer) and name in module.scaling:
                module.scaling[name] = 1.0
    logger.info("mixed adapters %s with %s into %r", {s.name: s.weight for s in specs}, method, name)
    return name


def needs_mix(specs: list[AdapterSpec]) -> bool:
    return len(specs) > 1 or (len(specs) == 1 and specs[0].weight != 1.0)


def apply_adapters(
    model: Any, specs: list[AdapterSpec], method: str = "linear", density: float | None = None
) -> Any:
    """A PeftModel carrying the adapters; several (or a weighted one) are mixed into `mix`, which is active."""
    if not specs:
        return model
    peft_model = load_adapters(model, specs)
    active = mix_adapters(peft_model, specs, method, density, MIX) if needs_mix(specs) else specs[0].name
    peft_model.set_adapter(active, inference_mode=True)
    return peft_model


ROW_MIXES = "_llm_tuning_row_mixes"  # model attribute: {name: Mix} of the per-request mixes named by --mix


def add_row_mix(model: Any, name: str, mix: tuple[tuple[str, float], ...]) -> None:
    """Name a per-request mix on `model`, so `use_adapter(model, name)` runs it (compare / eval columns)."""
    taken = set(getattr(model, "peft_config", {})) | set(getattr(model, ROW_MIXES, {})) | {BASE}
    if name in taken:
        raise ConfigError(f"--mix {name}: that name is already taken by an adapter, a mix or the base model; "
                          "name it NAME=ADAPTER:WEIGHT+ADAPTER:WEIGHT")  # fmt: skip
    setattr(model, ROW_MIXES, {**getattr(model, ROW_MIXES, {}), name: mix})


def row_mix_named(model: Any, name: Any) -> tuple[tuple[str, float], ...] | None:
    """The per-request mix `name` stands for on `model` (a mix itself, or one added by add_row_mix), else None."""
    if isinstance(name, tuple):
        return name
    return getattr(model, ROW_MIXES, {}).get(name) if isinstance(name, str) else None


@contextmanager
def use_adapter(model: Any, name: Any) -> Iterator[Any]:
    """Run `model` with adapter `name` active; None or 'base' runs the base model (adapters disabled); a
    per-request mix (a ((adapter, weight), ...) tuple, or a name given to add_row_mix) runs that `cat` mix."""
    mix = row_mix_named(model, name)
    if mix is not None:
        from llm_tuning.models.row_mix import whole_batch_mix

        with whole_batch_mix(model, mix):
            yield model
    elif not hasattr(model, "peft_config"):
        if name not in (None, BASE):
            raise ConfigError(f"no adapter {name!r}: the model has none loaded")
        yield model
    elif name in (None, BASE):
        with model.disable_adapter():
            yield model
    else:
        model.set_adapter(name, inference_mode=True)
        yield model


def save_adapter_folder(peft_model: Any, name: str, folder: str | Path) -> Path:
    """Write adapter `name` as a plain PEFT folder (adapter_config.json + adapter_model.safetensors)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".mix.", dir=folder) as tmp:
        peft_model.save_pretrained(tmp, selected_adapters=[name])
        # PEFT puts every adapter but "default" in a subfolder named after it
        saved = Path(tmp) / name if name != "default" else Path(tmp)
        for item in saved.iterdir():
            if item.is_file():
                os.replace(item, folder / item.name)
    return folder


def mixed_trainable_adapter(
    model: Any, specs: list[AdapterSpec], method: str = "cat", density: float | None = None
) -> Any:
    """A PeftModel whose single trainable adapter ('default') starts as the weighted mix of `specs`.

    For `train --previous_lora_weights A:0.7 --previous_lora_weights B:0.3`: the mix is built, written
    to a temporary folder and loaded back as a trainable adapter on the unwrapped base model.
    """
    from peft import PeftModel

    from llm_tuning.models.lora import native_targets

    peft_model = load_adapters(model, specs, "--previous_lora_weights")
    mix_adapters(peft_model, specs, method, density, MIX)
    with tempfile.TemporaryDirectory(prefix="llm-tuning-mix.") as tmp:
        save_adapter_folder(peft_model, MIX, tmp)
        base = peft_model.unload()
        with native_targets():
            trainable = PeftModel.from_pretrained(base, tmp, is_trainable=True)
    trainable.peft_config["default"].inference_mode = False
    return trainable


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
