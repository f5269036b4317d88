"""What an adapter gained on its domain and lost on general questions, against the base model.

    llm-tuning forgetting --adapter weights/phrases                      # the built-in general set
    llm-tuning forgetting --adapter a=run/checkpoint-20 --adapter b=run/checkpoint-40 \
        --general general.jsonl --domain held_out.jsonl --score exact_match

For the base model and each adapter (each checkpoint, the mix), on the general rows:
- the score (`--score`: a built-in generation metric, default `contains`, or module:function) and the rows
  whose score dropped against the base (labelled rows only);
- label-free: the mean KL(base || adapter) of the next-token distributions over the base model's own greedy
  reply to each prompt (the positions where the model answers), and the share of greedy replies that changed.
  Both need no answers, so any prompts will do.
With --domain, the same score on the domain rows: the gain that was paid for.

Writes OUTPUT_DIR/forgetting.json, forgetting.md and forgetting.png (gain on the domain against loss on
general; without --domain, the general score change against the KL).
"""

from __future__ import annotations

import logging
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
from llm_tuning.eval.general_set import write_general_set
from llm_tuning.eval.likelihood import encode_conversations, next_token_kl
from llm_tuning.eval.metrics import GENERATION_METRICS, SEGMENTERS, score_rows
from llm_tuning.eval.report import (
    better,
    cell,
    fmt,
    markdown_table,
    text_table,
    write_json_atomic,
    write_text_atomic,
)
from llm_tuning.eval.rows import EvalRow, read_eval_rows
from llm_tuning.eval.user_functions import load_function
from llm_tuning.eval.variants import load_variants
from llm_tuning.infer.compare import answer_with
from llm_tuning.infer.predict import InferenceOptions
from llm_tuning.models.adapters import BASE

logger = logging.getLogger(__name__)


@dataclass
class ForgettingConfig(InferenceOptions):
    """Measure what adapters lost on general questions (and gained on their domain) against the base model."""

    general: str | None = option(None, "general rows; prompt-only rows give the KL and changed answers only "
                                       "(default: llm-tuning's 40 common-knowledge questions)")  # fmt: skip
    domain: str | None = option(None, "the adapter's held-out domain rows, with targets")
    prompt_key: str = option("prompt", "field holding the prompt (pair rows)")
    target_key: str = option("target", "field holding the reference answer (pair rows)")
    score: str = option(
        "contains", f"how replies are scored: {', '.join(GENERATION_METRICS)}, or module:function"
    )
    segmenter: str = option("char", "how Chinese text is cut into tokens: char or jieba")
    output_dir: str = option("forgetting", "where forgetting.json, .md and .png go")
    batch_size: int = option(8, "rows generated or scored together")
    limit: int | None = option(None, "only the first N rows of each file")
    max_new_tokens: int = option(48, "longest reply in tokens", aliases=("max_tokens",))
    max_seq_length: int = option(2048, "longest prompt + reply scored for the KL")

    def __post_init__(self) -> None:
        validate_groups(self)
        if not self.adapter:
            raise ConfigError("give at least one --adapter [name=]folder to compare with the base model")
        check_positive("batch_size", self.batch_size)
        check_choice("segmenter", self.segmenter, SEGMENTERS)
        if self.score not in GENERATION_METRICS and ":" not in self.score:
            raise ConfigError(f"--score {self.score!r} is not a generation metric; choose one of "
                              f"{', '.join(GENERATION_METRICS)}, or give module:function")  # fmt: skip


@dataclass
class VariantReport:
    name: str
    general: float | None = None
    domain: float | None = None
    kl: float = 0.0
    changed: float = 0.0
    regressed: list[int] = field(default_factory=list)
    improved: list[int] = field(default_factory=list)


@dataclass
class ForgettingResult:
    output_dir: Path
    reports: list[VariantReport]
    score: str

    def summary(self) -> str:
        header, rows = report_table(self.reports, self.score)
        return "\n".join(
            [text_table(header, rows), "", f"report: {self.output_dir / 'forgetting.md'} (.json, .png)"]
        )


def report_table(reports: list[VariantReport], score: str) -> tuple[list[str], list[list[str]]]:
    base = reports[0]
    header = ["model", f"general {score}", "change", f"domain {score}", "change", "KL to base", "answers changed",
              "general rows lost"]  # fmt: skip
    rows = []
    for r in reports:
        delta = lambda new, old: "-" if new is None or old is None else f"{100 * (new - old):+.1f}"  # noqa: E731
        rows.append([r.name, fmt(score, r.general), delta(r.general, base.general), fmt(score, r.domain),
                     delta(r.domain, base.domain), f"{r.kl:.4f}", f"{100 * r.changed:.0f}%",
                     str(len(r.regressed))])  # fmt: skip
    return header, rows


def scorer(cfg: ForgettingConfig) -> Any:
    """A function (replies, rows) -> per-row scores for --score."""
    if cfg.score in GENERATION_METRICS:
        return lambda replies, rows: score_rows(
            [cfg.score], replies, [r.target for r in rows], cfg.segmenter
        ).per_row[cfg.score]
    from llm_tuning.eval.evaluate import user_scores

    fn = load_function(cfg.score, "--score")
    return lambda replies, rows: user_scores(cfg.score, fn, replies, rows)


def read_sets(cfg: ForgettingConfig, out: Path) -> tuple[list[EvalRow], list[EvalRow] | None, str]:
    if cfg.general:
        general = read_eval_rows(cfg.general, cfg.prompt_key, cfg.target_key, cfg.limit)
        source = cfg.general
    else:  # the built-in set, written out so the user sees what was asked
        source = str(write_general_set(out / "forgetting_general_set.jsonl"))
        general = read_eval_rows(source, limit=cfg.limit)
    domain = None
    if cfg.domain:
        domain = read_eval_rows(
            cfg.domain, cfg.prompt_key, cfg.target_key, cfg.limit, f"--domain (--score {cfg.score})"
        )
    return general, domain, source


def run(cfg: ForgettingConfig) -> ForgettingResult:
    out = Path(cfg.output_dir)
    general, domain, source = read_sets(cfg, out)
    labelled = all(r.target is not None for r in general)
    score = scorer(cfg)
    model, tokenizer, names = load_variants(cfg, mix_unweighted=False)
    render = lambda rows: [prompt_text(tokenizer, r.prompt, cfg.template, cfg.system_prompt) for r in rows]  # noqa: E731
    general_prompts, domain_prompts = render(general), render(domain or [])
    raw = cfg.template == "none"
    replies = {n: answer_with(model, tokenizer, n, general_prompts, cfg, cfg.batch_size, raw) for n in names}
    base_replies = replies[BASE]
    # the KL is read where the model answers: over the base model's own reply (and its end-of-turn token)
    answered = [
        [*r.prompt, {"role": "assistant", "content": a}] for r, a in zip(general, base_replies, strict=True)
    ]
    encoded = encode_conversations(tokenizer, answered, cfg.template, cfg.system_prompt, cfg.max_seq_length)
    general_scores = {n: score(replies[n], general) for n in names} if labelled else {}
    reports = []
    for name in names:
        report = VariantReport(name)
        report.changed = sum(a != b for a, b in zip(replies[name], base_replies, strict=True)) / len(general)
        if name != BASE:
            kls = next_token_kl(model, BASE, name, encoded, tokenizer.pad_token_id, cfg.batch_size)
            report.kl = sum(kls) / len(kls)
        if labelled:
            report.general = sum(general_scores[name]) / len(general)
            pairs = list(zip(general, general_scores[name], general_scores[BASE], strict=True))
            report.regressed = [r.number for r, new, old in pairs if better(cfg.score, old, new)]
            report.improved = [r.number for r, new, old in pairs if better(cfg.score, new, old)]
        if domain:
            domain_replies = answer_with(model, tokenizer, name, domain_prompts, cfg, cfg.batch_size, raw)
            report.domain = sum(score(domain_replies, domain)) / len(domain)
        reports.append(report)
    write_reports(cfg, out, source, general, replies, general_scores, reports)
    return ForgettingResult(out, reports, cfg.score)


def write_reports(cfg: ForgettingConfig, out: Path, source: str, general: list[EvalRow], replies: dict[str, list[str]],
                  scores: dict[str, list[float]], reports: list[VariantReport]) -> None:  # fmt: skip
    rows = [{"row": r.number, "prompt": r.question, "target": r.target, "replies": {n: replies[n][i] for n in replies},
             **({"scores": {n: scores[n][i] for n in scores}} if scores else {})}
            for i, r in enumerate(general)]  # fmt: skip
    write_json_atomic(out / "forgetting.json", {"config": config_to_dict(cfg), "general_set": source,
                                                "score": cfg.score, "variants": [vars(r) for r in reports],
                                                "general_rows": rows})  # fmt: skip
    header, table = report_table(reports, cfg.score)
    parts = [f"# forgetting: {', '.join(r.name for r in reports[1:])} against the base model {cfg.model}\n",
             f"General set: {source} ({len(general)} rows); domain set: {cfg.domain or 'none'}. Scores in %; "
             "KL: mean KL(base || adapter) of the next-token distributions over the base model's greedy replies.\n",
             markdown_table(header, table), "![forgetting](forgetting.png)\n"]  # fmt: skip
    by_number = {r["row"]: r for r in rows}
    for report in reports[1:]:
        parts.append(f"\n## {report.name}: general rows lost ({len(report.regressed)})\n")
        if report.regressed:
            parts.append(markdown_table(["row", "prompt", "target", BASE, report.name], [
                [str(n), cell(by_number[n]["prompt"], 80), cell(by_number[n]["target"], 40),
                 cell(by_number[n]["replies"][BASE], 60), cell(by_number[n]["replies"][report.name], 60)]
                for n in report.regressed[:50]]))  # fmt: skip
    write_text_atomic(out / "forgetting.md", "\n".join(parts))
    plot_forgetting(reports, cfg.score, out / "forgetting.png")


def plot_forgetting(reports: list[VariantReport], score: str, path: Path) -> Path:
    """One point per adapter: gain on the domain against loss on general (or general change against KL)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    base, others = reports[0], reports[1:]
    fig, ax = plt.subplots(figsize=(5.5, 4.2))
    if base.domain is not None and base.general is not None:
        xs = [100 * (base.general - r.general) for r in others]
        ys = [100 * (r.domain - base.domain) for r in others]
        ax.set_xlabel(f"loss on general ({score}, points)")
        ax.set_ylabel(f"gain on domain ({score}, points)")
    else:
        xs = [r.kl for r in others]
        ys = [100 * ((r.general or 0) - (base.general or 0)) for r in others]
        ax.set_xlabel("KL(base || adapter) per token")
        ax.set_ylabel(f"general {score} change (points)")
    ax.scatter(xs, ys)
    for x, y, r in zip(xs, ys, others, strict=True):
        ax.annotate(r.name, (x, y), textcoords="offset points", xytext=(4, 4))
    ax.axhline(0, color="grey", lw=0.5)
    ax.axvline(0, color="grey", lw=0.5)
    ax.grid(alpha=0.3)
    ax.set_title("what each adapter gained and lost against the base")
    fig.tight_layout()
    tmp = path.with_name(path.stem + ".tmp.png")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    tmp.replace(path)
    return path
