"""`sde render` and `sde score`: write a task's rows in a sample design, and score predictions.

llm-tuning sde render --task masa_d1 --design es_sde --input reviews.jsonl --output train.jsonl
llm-tuning train --data train.jsonl ...        # MI / No-MI travels with each row as `prompt_loss`
llm-tuning predict --adapter weights/x --data_path test.jsonl --output_file preds.jsonl
llm-tuning sde score --task masa_d1 --design es_sde --predictions preds.jsonl
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from llm_tuning.config import ConfigError, check_output_path, check_positive, option
from llm_tuning.data.read import DataError, iter_rows, write_jsonl
from llm_tuning.files import write_json
from llm_tuning.sde.data import read_task_rows
from llm_tuning.sde.designs import design_spec, parse_design, render_sample
from llm_tuning.sde.metrics import score_predictions
from llm_tuning.sde.tasks import load_task

logger = logging.getLogger(__name__)


@dataclass
class RenderConfig:
    """Render a task's labelled rows as prompt / target JSONL in one sample design."""

    task: str = option(
        "masa_d1", "built-in task (masa_d1, masa_d2, masa_en, genia, maven, wnut16) or a YAML file"
    )
    design: str = option("es_sde", "preset (es_sde, inst_last, no_inst, mi, natural, json, ou, numeric, cot, "
                                   "rcot, heuristic) or options like 'es_sde,output_format=json'")  # fmt: skip
    input: str = option(
        "", "rows {text, labels} as JSONL, or a BIO/CoNLL file", aliases=("input_file", "data")
    )
    output: str = option("", "where to write prompt/target JSONL", aliases=("output_file",))

    def __post_init__(self) -> None:
        if not self.input or not self.output:
            raise ConfigError("sde render needs --input FILE and --output FILE")
        check_output_path("output", self.output)
        parse_design(self.design)


@dataclass
class RenderResult:
    output: Path
    rows: int
    design: str

    def summary(self) -> str:
        return f"wrote {self.rows} rows in design {self.design} to {self.output}"


def run_render(cfg: RenderConfig) -> RenderResult:
    task, design = load_task(cfg.task), parse_design(cfg.design)
    rows = read_task_rows(cfg.input, task)
    rendered = [{**render_sample(task, design, row), "text": row["text"]} for row in rows]
    write_jsonl(rendered, cfg.output)
    logger.info("rendered %d rows of %s as %s -> %s", len(rows), task.name, design_spec(design), cfg.output)
    return RenderResult(Path(cfg.output), len(rendered), design_spec(design))


@dataclass
class ScoreConfig:
    """Score a predictions JSONL ({prompt, target, prediction} rows) under a task and design."""

    task: str = option("masa_d1", "built-in task or a YAML file")
    design: str = option("es_sde", "the design the targets were rendered with")
    predictions: str = option("", "JSONL from `llm-tuning predict` (or the original's predict script)",
                              aliases=("input", "data"))  # fmt: skip
    output: str | None = option(None, "also write the full report as JSON here")
    show_failed: int = option(5, "rows that failed to parse shown in the summary")

    def __post_init__(self) -> None:
        if not self.predictions:
            raise ConfigError("sde score needs --predictions FILE")
        parse_design(self.design)
        check_positive("show_failed", self.show_failed, allow_zero=True)
        check_output_path("output", self.output)


@dataclass
class ScoreResult:
    report: dict[str, Any]
    show_failed: int = 5
    output: Path | None = field(default=None)

    def summary(self) -> str:
        return format_report(self.report, self.show_failed)


def format_report(report: dict[str, Any], show_failed: int = 5) -> str:
    """The headline metrics, a per-slot breakdown and the first rows that failed to parse."""
    m = report["metrics"]
    lines = [f"task {report['task']}, design {report['design']}, {report['rows']} rows, "
             f"{report['format_errors']} format errors ({report['format_error_rate']:.2%})"]  # fmt: skip
    if "kappa" in m:
        lines.append(f"Acc_ALL {m['acc_all']}  Acc_sentence {m['acc_sentence']}  kappa {m['kappa']}")
        lines += [f"  {slot:<12} acc {s['acc']}" for slot, s in report["per_slot"].items()]
    else:
        for mode in ("hard", "soft"):
            lines.append(f"{mode}: P {m[mode]['precision']}  R {m[mode]['recall']}  F1 {m[mode]['f1']}")
        lines += [
            f"  {slot:<14} F1 {s['hard']['f1']} (soft {s['soft']['f1']})"
            for slot, s in report["per_slot"].items()
        ]
    for row in report["failed"][:show_failed]:
        lines.append(f"  unparsed row {row['index']}: {row['prediction']!r:.80} ({'; '.join(row['errors'])})")
    return "\n".join(lines)


def main_metric(report: dict[str, Any]) -> tuple[str, float]:
    """The number designs are ranked by: weighted kappa for sentiment, hard micro F1 for extraction."""
    m = report["metrics"]
    if "kappa" in m:
        return "kappa", m["kappa"] or 0.0
    return "f1", m["hard"]["f1"] or 0.0


def read_predictions(path: str) -> list[dict[str, Any]]:
    rows = []
    for number, row in iter_rows(path):
        for key in ("target", "prediction"):
            if key not in row:
                raise DataError(path, number, "is missing", key, f"this row has fields {sorted(row)}; "
                                "rows need 'target' and 'prediction' as `llm-tuning predict` writes them")  # fmt: skip
            if not isinstance(row[key], str):
                raise DataError(path, number, f"must be text, got {type(row[key]).__name__}", key,
                                "an empty answer is \"\"; fix or remove the row")  # fmt: skip
        rows.append(row)
    if not rows:
        raise DataError(path, None, "has no rows", hint="pass the JSONL that `llm-tuning predict` wrote")
    return rows


def run_score(cfg: ScoreConfig) -> ScoreResult:
    report = score_predictions(
        load_task(cfg.task), parse_design(cfg.design), read_predictions(cfg.predictions)
    )
    out = None
    if cfg.output:
        out = Path(cfg.output)
        write_json(out, report)
    return ScoreResult(report, cfg.show_failed, out)
