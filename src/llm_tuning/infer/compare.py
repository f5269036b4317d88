"""The same prompts answered by the base model, each adapter alone and their mix, side by side.

    llm-tuning compare --adapter math=weights/math --adapter style=weights/style --data test.jsonl \
        --mix_method cat
    llm-tuning compare --adapter math=weights/math --adapter style=weights/style --data test.jsonl \
        --mix math:0.7+style:0.3 --mix style_heavy=math:0.2+style:0.8

Every variant answers in one continuously batched run: rows of the base model, each adapter, the up-front
mix and each `--mix` (a `cat` mix computed per row, llm_tuning.models.row_mix) share every forward. With
`--mix`, unweighted adapters are only loaded by name; weighted ones are still mixed up front (`mix`).

Writes DATA.compare.jsonl (one row per prompt: prompt, target, and one field per model) and
DATA.compare.md (a markdown table with the exact-match rate of each model when rows have targets),
and prints a shortened table.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from llm_tuning.config import ConfigError, check_output_path, check_positive, option, validate_groups
from llm_tuning.data.formats import prompt_messages
from llm_tuning.data.read import write_jsonl
from llm_tuning.data.template import prompt_text
from llm_tuning.files import write_text
from llm_tuning.infer.predict import InferenceOptions, read_prompts
from llm_tuning.models.adapters import (
    BASE,
    MIX,
    AdapterSpec,
    add_row_mix,
    check_mix_options,
    load_adapters,
    mix_adapters,
    needs_mix,
    parse_adapter_spec,
    use_adapter,
)
from llm_tuning.models.generate import GenerationOptions, generate_all
from llm_tuning.models.load import load_model, load_tokenizer
from llm_tuning.models.row_mix import parse_mix_option

logger = logging.getLogger(__name__)


@dataclass
class CompareConfig(InferenceOptions):
    """Answer the same prompts with the base model, each adapter and their mix."""

    data_path: str = option("", "JSON/JSONL/CSV file of prompts", aliases=("input_file", "data"))
    prompt_key: str = option("prompt", "field holding the prompt")
    target_key: str = option("target", "field holding the reference answer (scored when present)")
    output_file: str | None = option(
        None, "JSONL to write (default: DATA.compare.jsonl; the table goes next to it as .md)"
    )
    batch_size: int = option(8, "prompts generated together")
    limit: int | None = option(None, "only the first N rows")
    max_new_tokens: int = option(64, "longest reply in tokens", aliases=("max_tokens",))
    show: int = option(8, "rows printed in the summary table")
    width: int = option(28, "characters per cell in the printed table")

    def __post_init__(self) -> None:
        validate_groups(self)
        if not self.data_path:
            raise ConfigError("--data_path is required: a JSON/JSONL/CSV file with a prompt per row")
        for name in ("batch_size", "limit", "width"):
            check_positive(name, getattr(self, name))
        check_positive("show", self.show, allow_zero=True)
        check_output_path("output_file", self.output_file)
        check_mix_options(self.mix_method, self.mix_density)
        if not self.adapter:
            raise ConfigError(
                "give at least one --adapter [name=]folder[:weight] to compare with the base model"
            )


@dataclass
class CompareResult:
    output_file: Path
    markdown_file: Path
    variants: list[str]
    rows: list[dict[str, Any]] = field(default_factory=list)
    exact: dict[str, float] = field(default_factory=dict)
    show: int = 8
    width: int = 28

    def summary(self) -> str:
        columns = ["prompt", *self.variants]
        lines = [" | ".join(f"{c:<{self.width}}" for c in columns)]
        lines.append("-+-".join("-" * self.width for _ in columns))
        for row in self.rows[: self.show]:
            lines.append(" | ".join(f"{_cell(str(row[c]), self.width):<{self.width}}" for c in columns))
        if self.exact:
            lines += [
                "",
                "exact match with the target: " + ", ".join(f"{v} {s:.0%}" for v, s in self.exact.items()),
            ]
        return "\n".join([*lines, "", f"all rows: {self.output_file} and {self.markdown_file}"])


def _cell(text: str, width: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"


def variant_model(model: Any, specs: list[AdapterSpec], method: str, density: float | None,
                  row_mixes: list[str] | None = None) -> tuple[Any, list[str]]:  # fmt: skip
    """(model with every adapter and the mixes loaded, the names to compare: base, each adapter, the up-front mix,
    each --mix). With `row_mixes`, only weighted adapters are mixed up front."""
    peft_model = load_adapters(model, specs)
    names = [BASE, *(s.name for s in specs)]
    up_front = needs_mix(specs) and (not row_mixes or any(s.weight != 1.0 for s in specs))
    if up_front:
        if MIX in names:
            raise ConfigError(f"an adapter is named {MIX!r}, the name of the mix; name it differently")
        mix_adapters(peft_model, specs, method, density, MIX)
        names.append(MIX)
    for text in row_mixes or []:
        name, mix = parse_mix_option(text, peft_model)
        add_row_mix(peft_model, name, mix)
        names.append(name)
    return peft_model, names


def answer_with(model: Any, tokenizer: Any, name: str, prompts: list[str], opts: GenerationOptions,
                batch_size: int, raw: bool = False) -> list[str]:  # fmt: skip
    """Replies of variant `name` (an adapter, a mix, or base) to rendered prompts."""
    with use_adapter(model, name):
        results, seconds = generate_all(model, tokenizer, prompts, opts, batch_size, add_special_tokens=raw)
    logger.info("%s answered %d prompts in %.1f s", name, len(prompts), seconds)
    return [r.text for r in results]


def answer_all(model: Any, tokenizer: Any, names: list[str], prompts: list[str], opts: GenerationOptions,
               batch_size: int, raw: bool = False) -> dict[str, list[str]]:  # fmt: skip
    """Replies of every variant, all in one run of the batch engine (a row per prompt and variant)."""
    adapters = [name for name in names for _ in prompts]
    results, seconds = generate_all(model, tokenizer, prompts * len(names), opts, batch_size, adapters,
                                    add_special_tokens=raw)  # fmt: skip
    logger.info("%d variants answered %d prompts in %.1f s", len(names), len(prompts), seconds)
    return {
        name: [r.text for r in results[i * len(prompts) : (i + 1) * len(prompts)]]
        for i, name in enumerate(names)
    }


def markdown_table(rows: list[dict[str, Any]], columns: list[str], exact: dict[str, float]) -> str:
    def esc(text: Any) -> str:
        return str(text if text is not None else "").replace("|", "\\|").replace("\n", "<br>")

    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(esc(row.get(c)) for c in columns) + " |" for row in rows]
    if exact:
        lines.append(
            "| **exact match** | "
            + " | ".join(f"{exact[c]:.0%}" if c in exact else "" for c in columns[1:])
            + " |"
        )
    return "\n".join(lines) + "\n"


def run(cfg: CompareConfig) -> CompareResult:
    rows = read_prompts(cfg)
    specs = [parse_adapter_spec(s, i) for i, s in enumerate(cfg.adapter)]
    tokenizer = load_tokenizer(cfg.model, cfg.trust_remote_code)
    model, names = variant_model(load_model(cfg.model, cfg.dtype, cfg.device, cfg.trust_remote_code), specs,
                                 cfg.mix_method, cfg.mix_density, cfg.mix)  # fmt: skip
    prompts = [
        prompt_text(tokenizer, prompt_messages(r["prompt"]), cfg.template, cfg.system_prompt) for r in rows
    ]
    answers = answer_all(model, tokenizer, names, prompts, cfg, cfg.batch_size, cfg.template == "none")
    out_rows = [{**row, **{n: answers[n][i] for n in names}} for i, row in enumerate(rows)]
    has_targets = rows and all(r["target"] is not None for r in rows)
    exact = {n: sum(a.strip() == str(r["target"]).strip() for a, r in zip(answers[n], rows, strict=True)) / len(rows)
             for n in names} if has_targets else {}  # fmt: skip
    output = Path(cfg.output_file or Path(cfg.data_path).with_suffix(".compare.jsonl"))
    write_jsonl(out_rows, output)
    columns = ["prompt", *(["target"] if has_targets else []), *names]
    markdown = output.with_suffix(".md")
    write_text(markdown, markdown_table(out_rows, columns, exact))
    return CompareResult(output, markdown, names, out_rows, exact, cfg.show, cfg.width)
