"""Batch prediction over a JSONL/JSON/CSV file: the original's predict.py for every model.

    llm-tuning predict --adapter weights/simple_math_4op --data_path test.jsonl --prompt_key q --target_key a

Writes JSONL rows {prompt, target, prediction} (greedy by default) and reports rows, empty
predictions, time and generated tokens per second.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from llm_tuning.config import (
    ConfigError,
    ModelOptions,
    check_choice,
    check_output_path,
    check_positive,
    option,
    validate_groups,
)
from llm_tuning.data.formats import prompt_messages
from llm_tuning.data.read import DataError, iter_rows, write_jsonl
from llm_tuning.data.template import prompt_text
from llm_tuning.models.adapters import check_mix_options, load_with_adapters
from llm_tuning.models.generate import GenerationOptions, generate_all

logger = logging.getLogger(__name__)


@dataclass
class InferenceOptions(ModelOptions, GenerationOptions):
    adapter: list[str] = option([], "adapter folder as [name=]folder[:weight]; repeat to mix several")
    mix_method: str = option(
        "linear", "how several adapters combine: linear, cat, svd, ties, dare_linear, ..."
    )
    mix_density: float | None = option(None, "share of weights kept by ties / dare / magnitude_prune")
    template: str = option("chat", "chat: the model's chat template; none: raw prompt text")
    system_prompt: str | None = option(None, "system message (default: the chat template's own)")

    def __post_init__(self) -> None:
        check_choice("template", self.template, ("chat", "none"))


@dataclass
class PredictConfig(InferenceOptions):
    """Generate predictions for every row of a file."""

    data_path: str = option("", "JSON/JSONL/CSV file of prompts", aliases=("input_file", "data"))
    prompt_key: str = option("prompt", "field holding the prompt")
    target_key: str = option("target", "field holding the reference answer (copied to the output if present)")
    output_file: str | None = option(None, "where to write predictions (default: DATA.predictions.jsonl)")
    batch_size: int = option(8, "prompts generated together")
    limit: int | None = option(None, "only the first N rows")

    def __post_init__(self) -> None:
        validate_groups(self)
        if not self.data_path:
            raise ConfigError("--data_path is required: a JSON/JSONL/CSV file with a prompt per row")
        check_positive("batch_size", self.batch_size)
        check_positive("limit", self.limit)
        check_output_path("output_file", self.output_file)
        check_mix_options(self.mix_method, self.mix_density)


@dataclass
class PredictResult:
    output_file: Path
    rows: int
    empty: int
    seconds: float
    tokens_per_second: float


def read_prompts(cfg: PredictConfig) -> list[dict[str, str]]:
    rows = []
    for number, row in iter_rows(cfg.data_path):
        if cfg.prompt_key not in row:
            raise DataError(cfg.data_path, number, "is missing", cfg.prompt_key,
                            f"this row has fields {sorted(row)}; pass --prompt_key")  # fmt: skip
        prompt = row[cfg.prompt_key]
        if isinstance(prompt, bool) or not isinstance(prompt, (str, int, float)):
            # str(None) would send the model the text "None"
            raise DataError(cfg.data_path, number, f"must be text, got {type(prompt).__name__}", cfg.prompt_key,
                            "give every row a prompt, or remove the row")  # fmt: skip
        rows.append({"prompt": str(prompt), "target": row.get(cfg.target_key)})
        if cfg.limit and len(rows) >= cfg.limit:
            break
    if not rows:
        raise DataError(cfg.data_path, None, "has no rows", hint="add rows with a prompt field")
    return rows


def run(cfg: PredictConfig) -> PredictResult:
    rows = read_prompts(cfg)
    model, tokenizer = load_with_adapters(cfg.model, cfg.adapter, cfg.mix_method, cfg.mix_density, cfg.dtype,
                                          cfg.device, cfg.trust_remote_code)  # fmt: skip
    prompts = [
        prompt_text(tokenizer, prompt_messages(r["prompt"]), cfg.template, cfg.system_prompt) for r in rows
    ]
    results, seconds = generate_all(model, tokenizer, prompts, cfg, cfg.batch_size,
                                    add_special_tokens=cfg.template == "none")  # fmt: skip
    out_rows = [{**row, "prediction": res.text} for row, res in zip(rows, results, strict=True)]
    output = Path(cfg.output_file or Path(cfg.data_path).with_suffix(".predictions.jsonl"))
    write_jsonl(out_rows, output)
    tokens = sum(r.new_tokens for r in results)
    empty = sum(not r.text for r in results)
    logger.info("%d rows, %d empty predictions, %.1f s, %.1f tokens/s -> %s", len(rows), empty, seconds,
                tokens / max(seconds, 1e-9), output)  # fmt: skip
    return PredictResult(output, len(rows), empty, seconds, tokens / max(seconds, 1e-9))
