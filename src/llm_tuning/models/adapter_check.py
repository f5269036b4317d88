"""Check an adapter folder before PEFT loads it, and record which base model an adapter belongs to.

    llm-tuning predict --adapter weights/math      # a damaged or foreign adapter stops here, with the reason

Every command that loads an adapter (`--adapter`, `--sft_adapter`, `--reward_model`,
`--previous_lora_weights`) goes through `check_adapter_folder` (files: the config is JSON, the weights are a
whole safetensors file whose ranks match the config) and, once the base model is loaded,
`check_adapter_fits` (every adapted layer exists with the adapter's shapes, and the base is the one the
adapter was trained on). Without these, PEFT answers a missing weights file with "outgoing traffic has been
disabled" (it tries the hub), a truncated file or another model's adapter with a traceback, and a model
with the same shapes but other weights silently.

Saving an adapter writes `llm_tuning_base.json` next to it: the base model's name as the user gave it, its
hub id where known, and a fingerprint of its weights; `adapter_config.json`'s `base_model_name_or_path`
gets a portable name (the hub id of the embedded model) instead of a path into this machine's cache.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llm_tuning.config import ConfigError
from llm_tuning.data.read import DataError

logger = logging.getLogger(__name__)

ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
ADAPTER_WEIGHTS_BIN = "adapter_model.bin"
BASE_RECORD = "llm_tuning_base.json"
REWRITE = "the folder is damaged or incomplete: copy the adapter folder again, or retrain it"


@dataclass
class AdapterFiles:
    folder: Path
    config: dict[str, Any]
    shapes: dict[str, tuple[int, ...]]  # tensor name -> shape, read from the file header only
    base: dict[str, Any] | None  # llm_tuning_base.json, when the adapter was saved by llm-tuning


def _read_json(path: Path, what: str) -> dict[str, Any]:
    try:
        data = json.loads(path.read_bytes().decode("utf-8-sig"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise DataError(path, None, f"is not valid JSON ({getattr(err, 'msg', err)})", hint=REWRITE) from None
    if not isinstance(data, dict):
        raise DataError(
            path, None, f"must be a JSON object ({what}), got {type(data).__name__}", hint=REWRITE
        )
    return data


def _weight_shapes(folder: Path) -> dict[str, tuple[int, ...]]:
    """Tensor shapes of the adapter's weights, without loading them (a truncated file fails here)."""
    path = folder / ADAPTER_WEIGHTS
    if path.is_file():
        from safetensors import safe_open

        if path.stat().st_size == 0:
            raise DataError(path, None, "is empty (0 bytes)", hint=REWRITE)
        try:
            with safe_open(str(path), "pt") as f:
                return {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
        except Exception as err:  # safetensors raises its own SafetensorError for every kind of damage
            raise DataError(path, None, f"is not a readable safetensors file ({err}): truncated or corrupted",
                            hint=REWRITE) from None  # fmt: skip
    path = folder / ADAPTER_WEIGHTS_BIN
    if path.is_file():
        import torch

        try:  # weights only: never unpickle code from a user's file
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as err:
            raise DataError(
                path, None, f"cannot be read as tensors ({type(err).__name__})", hint=REWRITE
            ) from None
        if not isinstance(state, dict):
            raise DataError(path, None, "does not hold a dict of tensors", hint=REWRITE)
        return {k: tuple(v.shape) for k, v in state.items() if hasattr(v, "shape")}
    raise DataError(folder, None, f"has {ADAPTER_CONFIG} but no {ADAPTER_WEIGHTS}",
                    hint="the adapter's weights are missing: copy adapter_model.safetensors next to its config")  # fmt: skip


def check_adapter_folder(path: str | Path, flag: str = "--adapter") -> AdapterFiles:
    """The adapter folder's parsed files; a DataError / ConfigError naming the flag and the file otherwise."""
    folder = Path(path)
    if not folder.exists():
        raise FileNotFoundError(
            f"{flag} {path}: no such folder; pass an adapter folder written by `llm-tuning train`"
        )
    if not folder.is_dir():
        raise ConfigError(f"{flag} {path} is a file; pass the adapter's folder (holding {ADAPTER_CONFIG})")
    if not (folder / ADAPTER_CONFIG).is_file():
        raise FileNotFoundError(
            f"{flag} {path}: no {ADAPTER_CONFIG} there; pass a folder written by `llm-tuning train`"
        )
    config = _read_json(folder / ADAPTER_CONFIG, "a PEFT adapter config")
    where = folder / ADAPTER_CONFIG
    if config.get("peft_type", "LORA") != "LORA":
        raise DataError(where, None, f"is a {config['peft_type']} adapter; llm-tuning loads LoRA adapters",
                        "peft_type")  # fmt: skip
    rank = config.get("r")
    if isinstance(rank, bool) or not isinstance(rank, int) or rank < 1:
        raise DataError(where, None, f"must be a positive whole number, got {rank!r}", "r", REWRITE)
    if not config.get("target_modules") and not config.get("target_parameters"):
        raise DataError(where, None, "is missing or empty", "target_modules", REWRITE)
    shapes = _weight_shapes(folder)
    lora = {k: v for k, v in shapes.items() if k.endswith(("lora_A.weight", "lora_B.weight"))}
    if not lora:
        raise DataError(folder / ADAPTER_WEIGHTS, None, "holds no LoRA weights (no lora_A / lora_B tensors)",
                        hint=REWRITE)  # fmt: skip
    patterns = config.get("rank_pattern") or {}
    ranks = {v[0] for k, v in lora.items() if k.endswith("lora_A.weight") and len(v) == 2}
    if config.get("target_parameters"):  # PEFT stacks the experts' LoRA: rank x number of experts
        ranks = {r for r in ranks if r % rank}
    if not patterns and ranks and ranks != {rank}:
        raise DataError(where, None, f"says rank {rank}, but the weights have rank {sorted(ranks)}", "r",
                        "the config and the weights come from different saves; copy them together")  # fmt: skip
    base = None
    if (folder / BASE_RECORD).is_file():
        try:
            base = _read_json(folder / BASE_RECORD, "the base model record")
        except DataError as err:  # only a record: the adapter itself is whole
            logger.warning("%s; the base model cannot be checked", err)
    return AdapterFiles(folder, config, shapes, base)


def _features(module: Any) -> tuple[int, int] | None:
    """(in, out) features of a layer LoRA wraps: nn.Linear and its kin, or GPT-2's Conv1D."""
    module = getattr(module, "base_layer", module)  # a layer already wrapped by another adapter
    if hasattr(module, "in_features") and hasattr(module, "out_features"):
        return int(module.in_features), int(module.out_features)
    weight = getattr(module, "weight", None)
    if type(module).__name__ == "Conv1D" and weight is not None and weight.dim() == 2:
        return int(weight.shape[0]), int(weight.shape[1])
    return None


FINGERPRINT_ATTR = "_llm_tuning_base_fingerprint"


def remember_base_fingerprint(model: Any) -> None:
    """Take the fingerprint now, before the model is sharded (FSDP / ZeRO-3), for record_base_model at the end."""
    setattr(model, FINGERPRINT_ATTR, base_fingerprint(model))


def base_fingerprint(model: Any) -> str | None:
    """A short hash of a few rows of the input embeddings, in bf16: the same base gives the same hash whether it
    was loaded in fp32, bf16 or fp16; another model (or another fine-tune) gives another one. None when the
    embeddings are not at hand (sharded by ZeRO-3)."""
    import torch

    remembered = getattr(model, FINGERPRINT_ATTR, None)
    if remembered:
        return remembered
    try:
        weight = model.get_input_embeddings().weight
    except (AttributeError, NotImplementedError):
        return None
    if weight is None or weight.dim() != 2 or weight.numel() == 0 or type(weight).__name__ == "DTensor":
        return None  # a DTensor is sharded (FSDP2): only a collective could read its rows
    rows = torch.linspace(0, weight.shape[0] - 1, 8).long().to(weight.device)
    sample = weight.detach()[rows].to("cpu", torch.bfloat16).contiguous()
    return hashlib.sha256(sample.view(torch.int16).numpy().tobytes()).hexdigest()[:16]


def _unwrapped(model: Any) -> Any:
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def _described(files: AdapterFiles) -> str:
    base = files.base or {}
    name = base.get("base_model") or files.config.get("base_model_name_or_path")
    return f"trained on {name!r}" if name else "of unknown origin"


def check_adapter_fits(model: Any, path: str | Path, flag: str = "--adapter") -> AdapterFiles:
    """The adapter's layers exist in `model` with its shapes, and `model` is the base it was trained on."""
    files = check_adapter_folder(path, flag)
    base = _unwrapped(model)
    current = getattr(base.config, "_name_or_path", "") or type(base).__name__
    modules = dict(base.named_modules())
    for key, shape in sorted(files.shapes.items()):
        if not key.endswith(("lora_A.weight", "lora_B.weight")) or len(shape) != 2:
            continue
        name = key.removeprefix("base_model.model.").rsplit(".lora_", 1)[0]
        name = re.sub(r"(\.base_layer)+$", "", name)  # fused experts: PEFT nests a wrapper per parameter
        if name not in modules:
            raise ConfigError(f"{flag} {path} does not fit --model {current}: it adapts layer {name!r}, which this "
                              f"model has not; the adapter was {_described(files)}; pass that --model")  # fmt: skip
        features = _features(modules[name])
        if features is None:
            continue
        expected = features[0] if key.endswith("lora_A.weight") else features[1]
        got = shape[1] if key.endswith("lora_A.weight") else shape[0]
        if got != expected:
            raise ConfigError(f"{flag} {path} does not fit --model {current}: layer {name} has {features[0]} inputs "
                              f"and {features[1]} outputs here, the adapter's weights are for {got}; the adapter was "
                              f"{_described(files)}; pass that --model")  # fmt: skip
    _check_same_base(model, files, flag, current)
    return files


def _check_same_base(model: Any, files: AdapterFiles, flag: str, current: str) -> None:
    recorded = (files.base or {}).get("base_fingerprint")
    here = base_fingerprint(model)
    if recorded and here:
        if recorded != here:
            raise ConfigError(f"{flag} {files.folder} was trained on base model {files.base.get('base_model')!r}, but "
                              f"--model {current} is a different model (same layer shapes, different weights): its "
                              f"outputs would be wrong; pass --model {files.base.get('base_model')}")  # fmt: skip
        return
    named = files.config.get("base_model_name_or_path")
    if named and Path(str(named)).name != Path(str(current)).name:
        logger.warning("%s %s records base model %r and no fingerprint to compare; make sure --model %s is that "
                       "model", flag, files.folder, named, current)  # fmt: skip


def portable_name(model_name: str) -> str:
    """What to record as an adapter's base: the hub id for a built-in name or a hub id, else the absolute folder."""
    from llm_tuning.models.resolve import EMBEDDED_MODELS

    if model_name in EMBEDDED_MODELS:
        return EMBEDDED_MODELS[model_name].hub_id or model_name
    path = Path(model_name).expanduser()
    return str(path.resolve()) if path.exists() else model_name


def record_base_model(folder: str | Path, model_name: str, model: Any) -> None:
    """Write llm_tuning_base.json and a portable base_model_name_or_path into a saved adapter folder."""
    from llm_tuning.models.resolve import EMBEDDED_MODELS

    folder = Path(folder)
    record = {"base_model": model_name if model_name in EMBEDDED_MODELS else portable_name(model_name),
              "base_model_hub_id": portable_name(model_name), "base_fingerprint": base_fingerprint(model),
              "model_type": getattr(_unwrapped(model).config, "model_type", None)}  # fmt: skip
    (folder / BASE_RECORD).write_text(json.dumps(record, indent=2), encoding="utf-8")
    config_path = folder / ADAPTER_CONFIG
    if config_path.is_file():
        config = json.loads(config_path.read_text(encoding="utf-8"))
        config["base_model_name_or_path"] = record["base_model_hub_id"]
        config_path.write_text(json.dumps(config, indent=2, sort_keys=True), encoding="utf-8")
