"""Score the base model and each adapter (and their mix) on held-out rows, side by side.

    llm-tuning eval --data held_out.jsonl --adapter math=weights/math --adapter style=weights/style:0.5
    llm-tuning eval --data qa.json --prompt_key q --target_key a --metrics exact_match,rouge_l,loss
    llm-tuning eval --data zh.jsonl --segmenter jieba --metric ./my_metrics.py:keyword_hit

Generation metrics (exact_match, contains, token_f1, rouge_l, bleu: eval/metrics.py) score greedy replies
made by the same batched path as `predict`; `loss` / `perplexity` read the targets' likelihood (no
generation); `--metric module:function` adds your own:

    def keyword_hit(predictions: list[str], targets: list[str], prompts: list[str], **columns) -> list[float]

Writes OUTPUT_DIR/eval.json (config, scores, every row's replies and scores, the rows each adapter gained
and lost against the base) and OUTPUT_DIR/eval.md, and prints the table.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from llm_tuning.config import (
    ConfigError,
    check_choice,
    check_positive,
    config_to_dict,
    option,
    validate_groups,
)
from llm_tuning.data.template import prompt_text
from llm_tuning.eval.harness import run_tasks, task_manager
from llm_tuning.eval.likelihood import encode_conversations, target_nll
from llm_tuning.eval.metrics import BUILTIN_METRICS, GENERATION_METRICS, LOSS_METRICS, SEGMENTERS, score_rows
from llm_tuning.eval.report import (
    RIGHT_OR_WRONG,
    cell,
    fmt,
    markdown_table,
    text_table,
    wins_and_losses,
    write_json_atomic,
    write_text_atomic,
)
from llm_tuning.eval.rows import EvalRow, read_eval_rows
from llm_tuning.eval.user_functions import load_function
from llm_tuning.eval.variants import load_variants
from llm_tuning.infer.compare import answer_with
from llm_tuning.infer.predict import InferenceOptions
from llm_tuning.models.adapters import BASE, use_adapter

logger = logging.getLogger(__name__)
DEFAULT_METRICS = "exact_match,token_f1,rouge_l,bleu,loss"


@dataclass
class EvalConfig(InferenceOptions):
    """Score the base model, each adapter and their mix on held-out rows."""

    data_path: str = option("", "held-out JSON/JSONL/CSV rows with targets", aliases=("data", "input_file"))
    prompt_key: str = option("prompt", "field holding the prompt (pair rows)")
    target_key: str = option("target", "field holding the reference answer (pair rows)")
    metrics: str = option(DEFAULT_METRICS, f"comma-separated built-in metrics: {', '.join(BUILTIN_METRICS)}")
    metric: list[str] = option([], "your own metric as module:function or file.py:function")
    segmenter: str = option(
        "char", "how Chinese text is cut into tokens: char (as sacrebleu's zh) or jieba words"
    )
    output_dir: str | None = option(None, "where eval.json and eval.md go (default: DATA.eval/)")
    batch_size: int = option(8, "rows generated or scored together")
    limit: int | None = option(None, "only the first N rows")
    max_new_tokens: int = option(128, "longest reply in tokens", aliases=("max_tokens",))
    max_seq_length: int = option(2048, "longest row scored for loss (prompt + target tokens)")
    tasks: str = option("", "lm-eval benchmark tasks, comma-separated (e.g. mmlu,gsm8k); needs lm-eval")
    task_path: str | None = option(None, "a folder of your own lm-eval task YAMLs (its include_path)")
    num_fewshot: int | None = option(None, "few-shot examples for --tasks (default: each task's own)")

    def __post_init__(self) -> None:
        validate_groups(self)
        if not self.data_path and not self.tasks:
            raise ConfigError(
                "give --data_path (a JSON/JSONL/CSV file of held-out rows with targets) or --tasks"
            )
        check_positive("batch_size", self.batch_size)
        check_choice("segmenter", self.segmenter, SEGMENTERS)
        unknown = [m for m in self.metric_names if m not in BUILTIN_METRICS]
        if unknown:
            raise ConfigError(f"--metrics: unknown metric {unknown[0]!r}; built-in metrics are "
                              f"{', '.join(BUILTIN_METRICS)}, or add your own with --metric module:function")  # fmt: skip
        if not self.metric_names and not self.metric:
            raise ConfigError("--metrics is empty and no --metric is given: name at least one metric")

    @property
    def metric_names(self) -> list[str]:
        return [m.strip() for m in self.metrics.split(",") if m.strip()]


@dataclass
class EvalResult:
    output_dir: Path
    variants: list[str]
    scores: dict[str, dict[str, float]]
    rows_per_second: dict[str, float]
    changes: dict[str, dict[str, list[int]]] = field(default_factory=dict)
    compare_by: str = ""
    benchmarks: dict[str, dict[str, dict[str, float]]] = field(default_factory=dict)

    def summary(self) -> str:
        metrics = list(next(iter(self.scores.values())))
        rows = [[v, *(fmt(m, self.scores[v][m]) for m in metrics), f"{self.rows_per_second.get(v, 0):.2f}"]
                for v in self.variants]  # fmt: skip
        lines = [text_table(["model", *metrics, "rows/s"], rows)]
        for name, change in self.changes.items():
            lines.append(f"{name} vs base on {self.compare_by}: better on rows {_short(change['gained'])}, "
                         f"worse on rows {_short(change['lost'])}")  # fmt: skip
        for name, tasks in self.benchmarks.items():
            lines.append(f"lm-eval {name}: " + "; ".join(f"{t} " + ", ".join(f"{m} {v:.4g}" for m, v in ms.items())
                                                        for t, ms in tasks.items()))  # fmt: skip
        return "\n".join([*lines, "", f"report: {self.output_dir}/"])


def _short(numbers: list[int], n: int = 10) -> str:
    return "none" if not numbers else ", ".join(map(str, numbers[:n])) + (" ..." if len(numbers) > n else "")


def user_scores(name: str, fn: Any, predictions: list[str], rows: list[EvalRow]) -> list[float]:
    """The user's metric on every row, checked: one finite number per row, or a ConfigError naming it."""
    columns = {k: [r.fields.get(k) for r in rows] for k in sorted({k for r in rows for k in r.fields})}
    columns = {k: v for k, v in columns.items() if k not in ("predictions", "targets", "prompts")}
    try:
        values = fn(predictions=predictions, targets=[r.target for r in rows], prompts=[r.question for r in rows],
                    **columns)  # fmt: skip
        values = [float(v) for v in values]
    except Exception as err:  # a user's function can raise anything: say which one and why
        raise ConfigError(f"--metric {name} raised {type(err).__name__}: {err}") from err
    if len(values) != len(rows) or not all(math.isfinite(v) for v in values):
        raise ConfigError(
            f"--metric {name} must return one finite number per row ({len(rows)}), got {values[:5]}..."
        )
    return values


def score_variant(cfg: EvalConfig, model: Any, tokenizer: Any, name: str, rows: list[EvalRow],
                  prompts: list[str], users: dict[str, Any]) -> tuple[dict, dict, list[str] | None, float]:  # fmt: skip
    """(overall scores, per-row scores, replies or None, rows/s) of variant `name`."""
    overall: dict[str, float] = {}
    per_row: dict[str, list[float]] = {}
    replies, speed = None, 0.0
    generation = [m for m in cfg.metric_names if m in GENERATION_METRICS]
    if generation or users:
        start = time.perf_counter()
        replies = answer_with(model, tokenizer, name, prompts, cfg, cfg.batch_size, cfg.template == "none")
        speed = len(rows) / max(time.perf_counter() - start, 1e-9)
        scores = score_rows(generation, replies, [r.target or "" for r in rows], cfg.segmenter)
        overall.update(scores.overall)
        per_row.update(scores.per_row)
        for spec, fn in users.items():
            per_row[spec] = user_scores(spec, fn, replies, rows)
            overall[spec] = sum(per_row[spec]) / len(rows)
    if any(m in LOSS_METRICS for m in cfg.metric_names):
        encoded = encode_conversations(tokenizer, [r.conversation for r in rows], cfg.template, cfg.system_prompt,
                                       cfg.max_seq_length)  # fmt: skip
        with use_adapter(model, name):
            nll = target_nll(model, encoded, tokenizer.pad_token_id, cfg.batch_size)
        per_row["loss"] = [s / max(n, 1) for s, n in nll]
        overall["loss"] = sum(s for s, _ in nll) / max(sum(n for _, n in nll), 1)
        overall["perplexity"] = math.exp(min(overall["loss"], 700))
    return overall, per_row, replies, speed


def compare_metric(cfg: EvalConfig) -> str:
    """The metric rows are compared by: the first generation metric, else the first user metric, else loss."""
    names = [m for m in cfg.metric_names if m in GENERATION_METRICS] + list(cfg.metric)
    return names[0] if names else "loss"


def run(cfg: EvalConfig) -> EvalResult:
    tasks = [t.strip() for t in cfg.tasks.split(",") if t.strip()]
    manager = task_manager(tasks, cfg.task_path) if tasks else None  # an unknown task fails before any work
    if not cfg.data_path:
        return run_benchmarks(cfg, tasks, manager)
    result = run_rows(cfg)
    if tasks:
        result.benchmarks = run_benchmarks(cfg, tasks, manager, result.output_dir).benchmarks
    return result


def run_benchmarks(cfg: EvalConfig, tasks: list[str], manager: Any, out: Path | None = None) -> EvalResult:
    """lm-eval's scores of every variant on `tasks`, into OUTPUT_DIR/benchmarks.json and .md."""
    model, tokenizer, names = load_variants(cfg)
    scores = run_tasks(model, tokenizer, names, tasks, manager, cfg.batch_size, cfg.limit, cfg.num_fewshot)
    out = Path(cfg.output_dir or out or "eval")
    write_json_atomic(
        out / "benchmarks.json", {"config": config_to_dict(cfg), "tasks": tasks, "scores": scores}
    )
    columns = sorted({f"{t}/{m}" for v in scores.values() for t, ms in v.items() for m in ms})
    flat = {n: {c: scores[n].get(c.split("/")[0], {}).get(c.split("/")[1]) for c in columns} for n in names}
    write_text_atomic(out / "benchmarks.md", f"# lm-eval: {', '.join(tasks)} (model {cfg.model})\n\n"
                      + markdown_table(["model", *columns], [[n, *(fmt("", flat[n][c]) for c in columns)] for n in names]))  # fmt: skip
    return EvalResult(out, names, flat, {}, benchmarks=scores)


def run_rows(cfg: EvalConfig) -> EvalResult:
    generation = [m for m in cfg.metric_names if m in GENERATION_METRICS] + list(cfg.metric)
    targets_for = f"--metrics {','.join(cfg.metric_names)}" + "".join(f" --metric {m}" for m in cfg.metric)
    rows = read_eval_rows(cfg.data_path, cfg.prompt_key, cfg.target_key, cfg.limit, targets_for)
    users = {spec: load_function(spec, "--metric") for spec in cfg.metric}
    model, tokenizer, names = load_variants(cfg)
    prompts = [prompt_text(tokenizer, r.prompt, cfg.template, cfg.system_prompt) for r in rows]
    results = {n: score_variant(cfg, model, tokenizer, n, rows, prompts, users) for n in names}
    by = compare_metric(cfg)
    numbers = [r.number for r in rows]
    changes = wins_and_losses(
        {n: results[n][1][by] for n in names if n != BASE}, results[BASE][1][by], by, numbers
    )
    out = Path(cfg.output_dir or Path(cfg.data_path).with_suffix(".eval"))
    per_row = [{"row": r.number, "prompt": r.question, "target": r.target,
                **({"replies": {n: results[n][2][i] for n in names}} if generation else {}),
                "scores": {n: {m: v[i] for m, v in results[n][1].items()} for n in names}}
               for i, r in enumerate(rows)]  # fmt: skip
    scores = {n: results[n][0] for n in names}
    speed = {n: results[n][3] for n in names}
    write_json_atomic(out / "eval.json", {"config": config_to_dict(cfg), "variants": names, "scores": scores,
                                          "rows_per_second": speed, "compare_by": by, "changes": changes,
                                          "rows": per_row})  # fmt: skip
    write_text_atomic(out / "eval.md", eval_markdown(cfg, names, scores, changes, by, per_row))
    logger.info("wrote %s", out / "eval.json")
    return EvalResult(out, names, scores, speed, changes, by)


def eval_markdown(
    cfg: EvalConfig, names: list[str], scores: dict, changes: dict, by: str, rows: list[dict]
) -> str:
    metrics = list(scores[names[0]])
    table = markdown_table(
        ["model", *metrics], [[n, *(fmt(m, scores[n][m]) for m in metrics)] for n in names]
    )
    parts = [f"# eval: {cfg.data_path} ({len(rows)} rows, model {cfg.model})\n", table,
             "Scores in % except loss and perplexity.\n"]  # fmt: skip
    by_number = {r["row"]: r for r in rows}
    word = ("right", "wrong") if by in RIGHT_OR_WRONG else ("better", "worse")
    for name, change in changes.items():
        for key, (a, b) in (("gained", (name, BASE)), ("lost", (BASE, name))):
            listed = change[key]
            parts.append(f"\n## {a} {word[0]}, {b} {word[1]} ({by}): {len(listed)} rows\n")
            if listed and "replies" in rows[0]:
                parts.append(markdown_table(["row", "prompt", "target", BASE, name], [
                    [str(n), cell(by_number[n]["prompt"], 80), cell(by_number[n]["target"], 60),
                     cell(by_number[n]["replies"][BASE], 60), cell(by_number[n]["replies"][name], 60)]
                    for n in listed[:50]]))  # fmt: skip
            elif listed:
                parts.append("rows " + ", ".join(map(str, listed)) + "\n")
    return "\n".join(parts)
