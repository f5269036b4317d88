"""Export a fine-tune for llama.cpp, Ollama and LM Studio: one GGUF file (plus a Modelfile), or a GGUF LoRA.

    llm-tuning export --adapter weights/math --format gguf --outtype q8_0 --output out/math.gguf
    llm-tuning export --adapter math=weights/math:0.7 --adapter style=weights/style:0.3 --format ollama --output out/mix.gguf
    llm-tuning export --adapter weights/math --format gguf-lora --output out/math-lora.gguf

`gguf` and `ollama` merge the adapter (or the weighted mix) into the base exactly as `llm-tuning merge`
does (infer/mix.py `merge_adapters`) and write it with models/gguf_export.py; `ollama` adds a `Modelfile`
next to the file (infer/ollama.py). `gguf-lora` writes the adapter (or the mix) alone, for
`llama-cli -m base.gguf --lora FILE`. Files are written under a temporary name and renamed when complete;
an existing file is replaced only with --overwrite.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from llm_tuning.config import ConfigError, check_choice, option, validate_groups
from llm_tuning.infer.mix import AdapterSetOptions, merge_adapters
from llm_tuning.infer.ollama import modelfile_text
from llm_tuning.models.adapters import MIX, apply_adapters, needs_mix, parse_adapter_spec
from llm_tuning.models.gguf_export import (
    OUTTYPES,
    check_exportable,
    check_tokenizer,
    write_atomically,
    write_model_gguf,
)
from llm_tuning.models.gguf_lora import write_lora_gguf
from llm_tuning.models.load import load_model, load_tokenizer
from llm_tuning.models.resolve import resolve_model

logger = logging.getLogger(__name__)

FORMATS = ("gguf", "ollama", "gguf-lora")


@dataclass
class ExportConfig(AdapterSetOptions):
    """Export the merged model (or the adapter alone) as GGUF for llama.cpp / Ollama / LM Studio."""

    dtype: str = option("auto", "not used: export merges in float32; --outtype sets the file's precision")
    output: str = option(
        "", "the .gguf file to write (with --format ollama, a Modelfile is written next to it)"
    )
    format: str = option("gguf", "gguf: merged model; ollama: gguf + Modelfile; gguf-lora: the adapter alone")
    outtype: str = option("f16", "tensor precision: f16, q8_0 (8-bit, half f16's size) or f32")
    writes_folder: ClassVar[bool] = False

    def __post_init__(self) -> None:
        check_choice("format", self.format, FORMATS)
        check_choice("outtype", self.outtype, OUTTYPES)
        if not self.output:
            raise ConfigError("--output is required: the .gguf file to write, e.g. --output out/model.gguf")
        out = Path(self.output)
        if out.is_dir():
            raise ConfigError(
                f"--output {out} is a folder; give the file to write, e.g. {out / 'model.gguf'}"
            )
        if out.suffix != ".gguf":
            raise ConfigError(f"--output {out} must end in .gguf (llama.cpp and Ollama go by the name)")
        for path in self.written_paths():
            if path.exists() and not self.overwrite:
                raise ConfigError(f"{path} exists; pass --overwrite to replace it")
        validate_groups(self)

    def written_paths(self) -> list[Path]:
        out = Path(self.output)
        return [out, out.parent / "Modelfile"] if self.format == "ollama" else [out]


@dataclass
class ExportResult:
    files: list[Path]
    format: str
    outtype: str
    adapters: dict[str, float]
    tensor_types: dict[str, int]
    template: str | None = None

    def summary(self) -> str:
        size = self.files[0].stat().st_size / 1e6
        types = ", ".join(f"{n} {kind}" for kind, n in sorted(self.tensor_types.items()))
        mixed = ", ".join(f"{name} x {weight:g}" for name, weight in self.adapters.items())
        lines = [
            f"wrote {self.files[0]} ({self.format}, {self.outtype}, {size:.1f} MB; tensors: {types}) from {mixed}"
        ]
        if self.template is not None:
            lines.append(f"wrote {self.files[1]} (chat template: {self.template}); run: "
                         f"ollama create NAME -f {self.files[1]}")  # fmt: skip
        return "\n".join(lines)


def run(cfg: ExportConfig) -> ExportResult:
    from transformers import AutoConfig

    # Refuse an unsupported architecture or tokenizer before loading and merging anything.
    check_exportable(
        AutoConfig.from_pretrained(resolve_model(cfg.model), trust_remote_code=cfg.trust_remote_code)
    )
    if cfg.format != "gguf-lora":
        check_tokenizer(load_tokenizer(cfg.model, cfg.trust_remote_code))
    specs = [parse_adapter_spec(s, i) for i, s in enumerate(cfg.adapter)]
    output = Path(cfg.output)
    name = f"{Path(cfg.model).name}-{'+'.join(s.name for s in specs)}"
    template = None
    if cfg.format == "gguf-lora":
        base = load_model(cfg.model, "float32", cfg.device, cfg.trust_remote_code)
        peft_model = apply_adapters(base, specs, cfg.method, cfg.density)
        adapter = MIX if needs_mix(specs) else specs[0].name
        counts = write_lora_gguf(peft_model, adapter, output, cfg.outtype, name)
    else:
        merged, tokenizer, specs = merge_adapters(cfg)
        counts = write_model_gguf(merged, tokenizer, output, cfg.outtype, name)
        if cfg.format == "ollama":
            text, template = modelfile_text(output.name, tokenizer, f"{name}, {cfg.outtype}")
            write_atomically(output.parent / "Modelfile", lambda tmp: tmp.write_text(text, encoding="utf-8"))
    logger.info("exported %s", ", ".join(map(str, cfg.written_paths())))
    return ExportResult(
        cfg.written_paths(), cfg.format, cfg.outtype, {s.name: s.weight for s in specs}, counts, template
    )
