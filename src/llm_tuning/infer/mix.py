"""Write a weighted mix of adapters as one adapter folder, or merge adapters into a full model folder.

    llm-tuning mix --adapter math=weights/math:0.7 --adapter style=weights/style:0.3 --method cat --output weights/mix
    llm-tuning merge --adapter weights/math --output models/smollm2-math --dtype bfloat16

`mix` writes a normal PEFT adapter folder (plain `PeftModel.from_pretrained` loads it) plus the
tokenizer; `merge` folds the adapter (or the mix) into the base weights and writes safetensors, config,
generation config and tokenizer with its chat template: plain `transformers` loads it, no PEFT needed.
Both write into a temporary folder next to `--output` and rename it into place when complete.
"""

from __future__ import annotations

import logging
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from llm_tuning.config import (
    ConfigError,
    ModelOptions,
    check_choice,
    check_output_path,
    option,
    save_config,
    validate_groups,
)
from llm_tuning.files import replace_folder, temp_folder
from llm_tuning.models.adapter_check import record_base_model
from llm_tuning.models.adapters import (
    MIX,
    MIX_METHODS,
    AdapterSpec,
    apply_adapters,
    load_adapters,
    mix_adapters,
    parse_adapter_spec,
    save_adapter_folder,
)
from llm_tuning.models.load import DTYPES, NonFiniteError, load_model, load_tokenizer, non_finite_tensors
from llm_tuning.models.targets import shared_weight_groups

logger = logging.getLogger(__name__)


@dataclass
class AdapterSetOptions(ModelOptions):
    adapter: list[str] = option([], "adapter folder as [name=]folder[:weight]; repeat to mix several")
    method: str = option("linear", f"how adapters combine: {', '.join(MIX_METHODS)}", aliases=("mix_method",))
    density: float | None = option(None, "share of weights kept by ties / dare / magnitude_prune (default 0.5)",
                                   aliases=("mix_density",))  # fmt: skip
    output: str = option("", "folder to write", aliases=("output_dir",))
    overwrite: bool = option(False, "replace --output if it already exists")
    writes_folder: ClassVar[bool] = (
        True  # mix and merge write a folder; export writes a file (its own checks)
    )

    def __post_init__(self) -> None:
        if not self.adapter:
            raise ConfigError("give at least one --adapter [name=]folder[:weight]")
        check_choice("method", self.method, MIX_METHODS)
        if self.density is not None and not 0 < self.density <= 1:
            raise ConfigError(f"--density must be in (0, 1], got {self.density}")
        if not self.output:
            raise ConfigError("--output is required: the folder to write")
        check_output_path("output", self.output, folder=self.writes_folder)
        out = Path(self.output)
        if self.writes_folder and out.is_dir() and any(out.iterdir()) and not self.overwrite:
            raise ConfigError(
                f"--output {self.output} exists and is not empty; pass --overwrite to replace it"
            )


@dataclass
class MixConfig(AdapterSetOptions):
    """Mix weighted adapters into one adapter folder."""

    def __post_init__(self) -> None:
        validate_groups(self)


@dataclass
class MergeConfig(AdapterSetOptions):
    """Merge adapters into the base model and write a full model folder."""

    dtype: str = option(
        "auto", "precision of the saved weights: auto (the base model's own), float32, bfloat16, float16"
    )

    def __post_init__(self) -> None:
        validate_groups(self)


@dataclass
class FolderResult:
    output: Path
    adapters: dict[str, float]
    method: str
    files: list[str]

    def summary(self) -> str:
        mixed = ", ".join(f"{name} x {weight:g}" for name, weight in self.adapters.items())
        how = f" mixed with {self.method}" if len(self.adapters) > 1 else ""
        return f"wrote {self.output} ({', '.join(self.files)}) from {mixed}{how}"


def write_folder(output: str | Path, overwrite: bool, fill: Any) -> Path:
    """Call `fill(tmp_folder)`, then rename the finished folder to `output` (replacing it if allowed)."""
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_folder(output)
    try:
        fill(tmp)
        if output.exists() and not overwrite and any(output.iterdir()):
            raise FileExistsError(f"{output} appeared while writing; pass --overwrite to replace it")
        replace_folder(tmp, output)  # one swap: a kill leaves the old folder or the new one
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return output


def run_mix(cfg: MixConfig) -> FolderResult:
    specs = [parse_adapter_spec(s, i) for i, s in enumerate(cfg.adapter)]
    tokenizer = load_tokenizer(cfg.model, cfg.trust_remote_code)
    base = load_model(cfg.model, "float32", cfg.device, cfg.trust_remote_code)
    peft_model = load_adapters(base, specs)
    mix_adapters(peft_model, specs, cfg.method, cfg.density, MIX)

    def fill(tmp: Path) -> None:
        save_adapter_folder(peft_model, MIX, tmp)
        tokenizer.save_pretrained(tmp)
        save_config(cfg, tmp)
        record_base_model(tmp, cfg.model, base)

    out = write_folder(cfg.output, cfg.overwrite, fill)
    logger.info("mixed adapter written to %s; use it with --adapter %s", out, out)
    return FolderResult(
        out, {s.name: s.weight for s in specs}, cfg.method, sorted(p.name for p in out.iterdir())
    )


def merged_dtype(requested: str, model: Any) -> Any:
    """The saved precision: --dtype, or the dtype the base model was stored in (float32 if unknown)."""
    import torch

    if requested != "auto":
        return DTYPES[requested]
    stored = getattr(model.config, "dtype", None) or getattr(model.config, "torch_dtype", None)
    if isinstance(stored, str):
        stored = DTYPES.get(stored)
    return stored if isinstance(stored, torch.dtype) else torch.float32


def merge_checked(peft_model: Any, dtype: Any) -> Any:
    """The merged model in `dtype`, or a ConfigError when merging would write a wrong or broken model:
    LoRA on a weight several layers share (one merged weight cannot hold a different change per layer),
    or NaN / inf in the merged weights (a broken adapter or base, or an overflow in the cast)."""
    shared = shared_weight_groups(peft_model)
    if shared:
        paths = " = ".join(p.removeprefix("base_model.model.") for p in shared[0])
        raise ConfigError(
            f"cannot merge: the adapter changes {len(shared)} weights that several layers share ({paths}), and a "
            "merged model has one copy of each, so it would not equal base + adapter. Use the adapter unmerged "
            "(--adapter FOLDER), or retrain with --target_modules leaving the shared block out"
        )
    merged = peft_model.merge_and_unload().to(dtype)
    bad = non_finite_tensors(merged)
    if bad:
        raise NonFiniteError(
            f"cannot merge: the merged weights hold NaN/inf in {', '.join(bad)} ({dtype}); nothing was written. "
            "Check the adapter and the base model in float32 (`llm-tuning predict`), or merge with --dtype float32"
        )
    return merged


def merge_adapters(cfg: AdapterSetOptions, dtype: str = "float32") -> tuple[Any, Any, list[AdapterSpec]]:
    """(model with the adapters, or their mix, folded in and cast to `dtype`; tokenizer; specs): `merge` and
    `export`. Merged in float32, checked by merge_checked (shared weights, NaN/inf) after the cast."""
    specs = [parse_adapter_spec(s, i) for i, s in enumerate(cfg.adapter)]
    tokenizer = load_tokenizer(cfg.model, cfg.trust_remote_code)
    base = load_model(cfg.model, "float32", cfg.device, cfg.trust_remote_code)  # merge in fp32, then cast
    merged = merge_checked(apply_adapters(base, specs, cfg.method, cfg.density), merged_dtype(dtype, base))
    return merged, tokenizer, specs


def run_merge(cfg: MergeConfig) -> FolderResult:
    merged, tokenizer, specs = merge_adapters(cfg, cfg.dtype)
    dtype = merged.dtype

    def fill(tmp: Path) -> None:
        merged.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        save_config(cfg, tmp)

    out = write_folder(cfg.output, cfg.overwrite, fill)
    logger.info("merged model (%s) written to %s; load it with --model %s", dtype, out, out)
    return FolderResult(
        out, {s.name: s.weight for s in specs}, cfg.method, sorted(p.name for p in out.iterdir())
    )
