"""`sde run`: find the best sample design for a task on your own data.

    llm-tuning sde run --task masa_d1 --data reviews.jsonl --designs es_sde,inst_last,json,ou --train_size 200

For each design: render the same training split, train a LoRA adapter, predict the same held-out split,
score. The report folder holds one sub-folder per design (train.jsonl, adapter/, predictions.jsonl,
score.json), report.md (one row per design: main metric, format-error rate, train time), report.png
(a bar chart) and report.json with the winner. A design that crashes is reported, not fatal; a re-run
skips designs whose score.json exists.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import random
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from llm_tuning.config import DEFAULT_MODEL, ConfigError, check_output_path, check_positive, option
from llm_tuning.data.formats import prompt_messages
from llm_tuning.data.read import write_jsonl
from llm_tuning.data.template import prompt_text
from llm_tuning.files import atomic_path, write_json, write_text
from llm_tuning.models.adapters import load_with_adapters
from llm_tuning.models.generate import GenerationOptions, generate_all
from llm_tuning.sde.commands import main_metric
from llm_tuning.sde.data import read_task_rows
from llm_tuning.sde.designs import Design, design_spec, parse_design, render_sample
from llm_tuning.sde.metrics import score_predictions
from llm_tuning.sde.tasks import Task, load_task
from llm_tuning.train.sft import TrainConfig
from llm_tuning.train.sft import run as train

logger = logging.getLogger(__name__)


@dataclass
class GridConfig:
    """Train, predict and score one LoRA adapter per sample design; report which design wins."""

    task: str = option("masa_d1", "built-in task or a YAML task file")
    data: str = option("", "labelled rows {text, labels} (JSONL) or a BIO/CoNLL file", aliases=("input",))
    designs: str = option("es_sde,inst_last,no_inst,mi,natural,json,ou,numeric",
                          "comma-separated designs; a key=value item modifies the design before it")  # fmt: skip
    train_size: int = option(200, "training rows (the same rows for every design)")
    test_size: int = option(100, "held-out rows (the same for every design)")
    model: str = option(DEFAULT_MODEL, "base model")
    output_dir: str = option("outputs/sde", "report folder")
    max_steps: int = option(60, "optimizer steps per design")
    batch_size: int = option(8, "rows per step")
    learning_rate: float = option(5e-4, "peak learning rate")
    lora_rank: int = option(16, "LoRA rank")
    max_seq_length: int = option(512, "longest training row in tokens")
    max_new_tokens: int = option(160, "longest generated answer")
    seed: int = option(0, "seed for the split and the training (the same for every design)")

    def __post_init__(self) -> None:
        if not self.data:
            raise ConfigError("sde run needs --data FILE with labelled rows")
        for name in ("train_size", "test_size", "max_steps", "batch_size", "learning_rate", "lora_rank",
                     "max_seq_length", "max_new_tokens"):  # fmt: skip
            check_positive(name, getattr(self, name))
        check_output_path("output_dir", self.output_dir, folder=True)
        self.design_list()

    def run_key(self, design: str) -> str:
        """What a design's result depends on: a finished design is reused only when this is unchanged."""
        fields = {k: v for k, v in dataclasses.asdict(self).items() if k not in ("designs", "output_dir")}
        source = Path(self.data)
        digest = hashlib.sha256(source.read_bytes()).hexdigest() if source.is_file() else None
        text = json.dumps({**fields, "design": design, "data_sha256": digest}, sort_keys=True, default=str)
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def design_list(self) -> list[Design]:
        specs: list[str] = []
        for item in (s.strip() for s in self.designs.split(",")):
            if "=" in item and specs:
                specs[-1] += "," + item
            elif item:
                specs.append(item)
        if not specs:
            raise ConfigError("--designs is empty; name at least one design, e.g. es_sde")
        return [parse_design(s) for s in specs]


@dataclass
class GridResult:
    output_dir: Path
    rows: list[dict[str, Any]] = field(default_factory=list)
    winner: str | None = None

    def summary(self) -> str:
        text = (self.output_dir / "report.md").read_text(encoding="utf-8")
        return f"{text}\nreport: {self.output_dir / 'report.md'}"


def split_rows(rows: list[dict], train_size: int, test_size: int, seed: int) -> tuple[list[dict], list[dict]]:
    if len(rows) < train_size + test_size:
        raise ConfigError(f"--train_size {train_size} + --test_size {test_size} needs {train_size + test_size} rows; "
                          f"the data has {len(rows)}")  # fmt: skip
    order = list(range(len(rows)))
    random.Random(seed).shuffle(order)
    return [rows[i] for i in order[test_size : test_size + train_size]], [rows[i] for i in order[:test_size]]


def run_design(
    cfg: GridConfig, task: Task, design: Design, train_rows: list, test_rows: list, folder: Path
) -> dict:
    """Render, train, predict and score one design; returns its score.json content."""
    train_file = write_jsonl([render_sample(task, design, r) for r in train_rows], folder / "train.jsonl")
    tests = [render_sample(task, design, r) for r in test_rows]
    start = time.perf_counter()
    result = train(TrainConfig(
        model=cfg.model, data=str(train_file), output_dir=str(folder / "adapter"), lora_rank=cfg.lora_rank,
        per_device_train_batch_size=cfg.batch_size, max_steps=cfg.max_steps, learning_rate=cfg.learning_rate,
        max_seq_length=cfg.max_seq_length, seed=cfg.seed, save_steps=cfg.max_steps, save_total_limit=1,
        overwrite_output_dir=True,  # the design's own folder: a rerun with other flags replaces its checkpoint
        logging_steps=max(1, cfg.max_steps // 10), report_to="none",
    ))  # fmt: skip
    train_seconds = time.perf_counter() - start
    model, tokenizer = load_with_adapters(cfg.model, [str(folder / "adapter")])
    prompts = [prompt_text(tokenizer, prompt_messages(t["prompt"])) for t in tests]
    generated, predict_seconds = generate_all(
        model, tokenizer, prompts, GenerationOptions(max_new_tokens=cfg.max_new_tokens), 16
    )
    predictions = [{"prompt": t["prompt"], "target": t["target"], "prediction": g.text}
                   for t, g in zip(tests, generated, strict=True)]  # fmt: skip
    write_jsonl(predictions, folder / "predictions.jsonl")
    report = score_predictions(task, design, predictions)
    metric, value = main_metric(report)
    return {"design": design_spec(design), "metric": metric, "value": value,
            "format_error_rate": report["format_error_rate"], "train_seconds": round(train_seconds, 1),
            "predict_seconds": round(predict_seconds, 1), "train_loss": result.train_loss, "report": report}  # fmt: skip


def run(cfg: GridConfig) -> GridResult:
    task = load_task(cfg.task)
    train_rows, test_rows = split_rows(
        read_task_rows(cfg.data, task), cfg.train_size, cfg.test_size, cfg.seed
    )
    out = Path(cfg.output_dir)
    results = []
    for design in cfg.design_list():
        name = design_spec(design)
        folder = out / name.replace(",", "+").replace("=", "-")
        done, key = folder / "score.json", cfg.run_key(name)
        previous = _read_score(done)
        if previous is not None and previous.get("run_key") == key:
            logger.info("== %s: already done with these settings, skipping", name)
            results.append(previous)
            continue
        if previous is not None:
            logger.info("== %s: done before with other settings (or data); running it again", name)
        logger.info("== design %s", name)
        try:
            score = {**run_design(cfg, task, design, train_rows, test_rows, folder), "run_key": key}
        except Exception as err:  # a crashing design is reported, the grid goes on
            logger.error("design %s failed: %s", name, err)
            results.append({"design": name, "error": f"{type(err).__name__}: {err}",
                            "traceback": traceback.format_exc()})  # fmt: skip
            continue
        write_json(done, score)
        results.append(score)
    winner = write_report(results, out, task)
    return GridResult(out, results, winner)


def _read_score(path: Path) -> dict | None:
    """A finished design's score.json, or None when it is missing or unreadable (then the design runs again)."""
    try:
        score = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return score if isinstance(score, dict) else None


def write_report(results: list[dict], out: Path, task: Task) -> str | None:
    """report.md, report.json and report.png; returns the winning design's name."""
    scored = [r for r in results if "error" not in r]
    winner = max(scored, key=lambda r: r["value"])["design"] if scored else None
    metric = scored[0]["metric"] if scored else "score"
    lines = [
        f"# Sample designs on {task.name}",
        "",
        f"| design | {metric} | format errors | train s |",
        "|---|---|---|---|",
    ]
    for r in results:
        if "error" in r:
            lines.append(f"| {r['design']} | failed: {r['error'][:60]} | | |")
        else:
            best = " **best**" if r["design"] == winner else ""
            lines.append(
                f"| {r['design']}{best} | {r['value']:.4f} | {r['format_error_rate']:.2%} | {r['train_seconds']:.0f} |"
            )
    lines += ["", f"winner: {winner}" if winner else "no design finished"]
    out.mkdir(parents=True, exist_ok=True)
    write_text(out / "report.md", "\n".join(lines) + "\n")
    slim = [{k: v for k, v in r.items() if k not in ("report", "traceback")} for r in results]
    write_json(out / "report.json", {"task": task.name, "winner": winner, "designs": slim})
    if scored:
        plot_designs(scored, metric, out / "report.png")
    return winner


def plot_designs(scored: list[dict], metric: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(max(5, 0.9 * len(scored)), 3.5))
    ax.bar([r["design"] for r in scored], [r["value"] for r in scored], color="#4c72b0")
    ax.set_ylabel(metric)
    ax.set_title("score by sample design")
    ax.tick_params(axis="x", rotation=45)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=100, format="png")
    plt.close(fig)
