"""Batch prediction over a JSONL/JSON/CSV file: the original's predict.py for every model.

    llm-tuning predict --adapter weights/simple_math_4op --data_path test.jsonl --prompt_key q --target_key a
    llm-tuning predict --adapter math=weights/math --adapter style=weights/style --mix math:0.7+style:0.3 ...
    llm-tuning predict --adapter math=weights/math --adapter style=weights/style --adapter_key model ...

`--mix` answers every row with a per-request `cat` mix of the loaded adapters (llm_tuning.models.row_mix),
computed per row by the batch engine instead of built up front; `--adapter_key FIELD` lets each row name
what answers it, as a server request's `model` does: `base`, an adapter's name, or a mix such as
`math:0.7+style:0.3` (rows without the field get `--mix`, or the model as `--adapter` sets it up).

Writes JSONL rows {prompt, target, prediction} (greedy by default) and reports rows, empty
predictions, time and generated tokens per second.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

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
from llm_tuning.models.adapters import (
    BASE,
    MIX,
    add_row_mix,
    check_mix_options,
    load_adapters,
    load_with_adapters,
    mix_adapters,
    parse_adapter_spec,
)
from llm_tuning.models.generate import GenerationOptions, generate_all
from llm_tuning.models.load import load_model, load_tokenizer
from llm_tuning.models.row_mix import check_row_mix, is_row_mix, parse_mix_option

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
    mix: list[str] = option([], "a mix of --adapter names computed per request (cat), not built up front: "
                                "[NAME=]ADAPTER:WEIGHT+ADAPTER:WEIGHT; compare / eval: repeatable, a column each")  # fmt: skip

    def __post_init__(self) -> None:
        check_choice("template", self.template, ("chat", "none"))
        if self.mix and not self.adapter:
            raise ConfigError(f"--mix {self.mix[0]}: give the adapters it mixes with --adapter NAME=FOLDER")


@dataclass
class PredictConfig(InferenceOptions):
    """Generate predictions for every row of a file."""

    data_path: str = option("", "JSON/JSONL/CSV file of prompts", aliases=("input_file", "data"))
    prompt_key: str = option("prompt", "field holding the prompt")
    target_key: str = option("target", "field holding the reference answer (copied to the output if present)")
    output_file: str | None = option(None, "where to write predictions (default: DATA.predictions.jsonl)")
    batch_size: int = option(8, "prompts generated together")
    limit: int | None = option(None, "only the first N rows")
    adapter_key: str | None = option(None, "field naming what answers each row: base, an adapter's name, or a "
                                           "mix such as math:0.7+style:0.3 (computed per row)")  # fmt: skip

    def __post_init__(self) -> None:
        validate_groups(self)
        if not self.data_path:
            raise ConfigError("--data_path is required: a JSON/JSONL/CSV file with a prompt per row")
        if len(self.mix) > 1:
            raise ConfigError(f"--mix is given {len(self.mix)} times; predict writes one prediction per row: give "
                              "one --mix, or name a mix per row with --adapter_key (compare and eval take several)")  # fmt: skip
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
    """{prompt, target} per row (and `adapter`, the row's --adapter_key value, when that flag is given)."""
    return [row for _, row in read_numbered_prompts(cfg)]


def read_numbered_prompts(cfg: PredictConfig) -> list[tuple[int, dict[str, Any]]]:
    rows = []
    adapter_key = getattr(cfg, "adapter_key", None)
    for number, row in iter_rows(cfg.data_path):
        if cfg.prompt_key not in row:
            raise DataError(cfg.data_path, number, "is missing", cfg.prompt_key,
                            f"this row has fields {sorted(row)}; pass --prompt_key")  # fmt: skip
        prompt = row[cfg.prompt_key]
        if isinstance(prompt, bool) or not isinstance(prompt, (str, int, float)):
            # str(None) would send the model the text "None"
            raise DataError(cfg.data_path, number, f"must be text, got {type(prompt).__name__}", cfg.prompt_key,
                            "give every row a prompt, or remove the row")  # fmt: skip
        out = {"prompt": str(prompt), "target": row.get(cfg.target_key)}
        if adapter_key:
            out["adapter"] = row.get(adapter_key)
        rows.append((number, out))
        if cfg.limit and len(rows) >= cfg.limit:
            break
    if not rows:
        raise DataError(cfg.data_path, None, "has no rows", hint="add rows with a prompt field")
    return rows


def load_for_inference(cfg: InferenceOptions, by_name: bool = False) -> tuple[Any, Any, str | None]:
    """(model, tokenizer, what rows answer with by default: --mix's name, or None: the model as --adapter sets it up).

    With --mix (or `by_name`: rows name their own adapter) the adapters are loaded by name and mixed up front
    only when weighted (as `mix`); --mix is computed per request."""
    if not cfg.mix and not by_name:
        model, tokenizer = load_with_adapters(cfg.model, cfg.adapter, cfg.mix_method, cfg.mix_density, cfg.dtype,
                                              cfg.device, cfg.trust_remote_code)  # fmt: skip
        return model, tokenizer, None
    specs = [parse_adapter_spec(s, i) for i, s in enumerate(cfg.adapter)]
    weighted = [s for s in specs if s.weight != 1.0]
    if weighted and cfg.mix:
        raise ConfigError(f"--adapter {weighted[0].name}:{weighted[0].weight:g} has a weight and --mix is given: with "
                          "--mix the adapters are only loaded by name; put the weights in --mix (A:W+B:W)")  # fmt: skip
    tokenizer = load_tokenizer(cfg.model, cfg.trust_remote_code)
    model = load_model(cfg.model, cfg.dtype, cfg.device, cfg.trust_remote_code)
    if not specs:
        return model, tokenizer, None
    model = load_adapters(model, specs)
    if weighted:
        model.set_adapter(
            mix_adapters(model, specs, cfg.mix_method, cfg.mix_density, MIX), inference_mode=True
        )
        return model, tokenizer, MIX
    if not cfg.mix:
        return model, tokenizer, specs[0].name if len(specs) == 1 else None
    name, mix = parse_mix_option(cfg.mix[0], model)
    add_row_mix(model, name, mix)
    return model, tokenizer, name


def row_adapters(cfg: PredictConfig, model: Any, rows: list[tuple[int, dict[str, Any]]],
                 default: str | None) -> list[Any] | None:  # fmt: skip
    """What answers each row (generate_all's `adapters`): its --adapter_key value, checked, else `default`."""
    if not cfg.adapter_key:
        return [default] * len(rows) if default else None
    loaded = [*getattr(model, "peft_config", {})]
    out: list[Any] = []
    for number, row in rows:
        value = row["adapter"]
        if (value is None or value == "") and default is None and len(loaded) > 1:
            raise DataError(cfg.data_path, number, "is missing", cfg.adapter_key, f"with several --adapter and no "
                            f"--mix, every row names base, an adapter ({', '.join(loaded)}) or a mix such as A:0.7+B:0.3")  # fmt: skip
        if value is None or value == "":
            out.append(default)
        elif not isinstance(value, str):
            raise DataError(cfg.data_path, number, f"must be text, got {type(value).__name__}", cfg.adapter_key,
                            "name base, an adapter, or a mix such as math:0.7+style:0.3")  # fmt: skip
        elif value == BASE or value in loaded or value == default:
            out.append(value)
        elif is_row_mix(value):
            try:
                out.append(check_row_mix(value, model))
            except ConfigError as err:
                raise DataError(cfg.data_path, number, str(err), cfg.adapter_key) from None
        else:
            raise DataError(cfg.data_path, number, f"no adapter named {value!r}", cfg.adapter_key,
                            f"loaded: {', '.join([BASE, *loaded])}; or write a mix such as A:0.7+B:0.3")  # fmt: skip
    return out


def run(cfg: PredictConfig) -> PredictResult:
    numbered = read_numbered_prompts(cfg)
    rows = [row for _, row in numbered]
    model, tokenizer, default = load_for_inference(cfg, by_name=bool(cfg.adapter_key))
    adapters = row_adapters(cfg, model, numbered, default)
    prompts = [
        prompt_text(tokenizer, prompt_messages(r["prompt"]), cfg.template, cfg.system_prompt) for r in rows
    ]
    results, seconds = generate_all(model, tokenizer, prompts, cfg, cfg.batch_size, adapters,
                                    add_special_tokens=cfg.template == "none")  # fmt: skip
    out_rows = [{**row, "prediction": res.text} for row, res in zip(rows, results, strict=True)]
    output = Path(cfg.output_file or Path(cfg.data_path).with_suffix(".predictions.jsonl"))
    write_jsonl(out_rows, output)
    tokens = sum(r.new_tokens for r in results)
    empty = sum(not r.text for r in results)
    logger.info("%d rows, %d empty predictions, %.1f s, %.1f tokens/s -> %s", len(rows), empty, seconds,
                tokens / max(seconds, 1e-9), output)  # fmt: skip
    return PredictResult(output, len(rows), empty, seconds, tokens / max(seconds, 1e-9))
