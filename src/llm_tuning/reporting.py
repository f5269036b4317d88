"""What every training command leaves next to its adapter: a JSON log and a PNG of its curves.

Shared by `train` and the RLHF commands (`rm`, `dpo`, `ppo`, `grpo`): a Trainer callback collects the
logged numbers; `write_training_report` writes `training_log.json` and `training_curves.png`.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

from transformers import TrainerCallback

from llm_tuning.files import atomic_path, write_json

logger = logging.getLogger(__name__)

LOG_FILE = "training_log.json"
PLOT_FILE = "training_curves.png"


class LogCollector(TrainerCallback):
    """Keeps every `logs` dict the Trainer emits, with its step, on the main process."""

    def __init__(self) -> None:
        self.records: list[dict[str, Any]] = []

    def on_log(self, args: Any, state: Any, control: Any, logs: dict | None = None, **kwargs: Any) -> None:
        if state.is_world_process_zero and logs:
            self.records.append({"step": state.global_step, **logs})


def final_eval(trainer: Any, step: int) -> dict[str, float] | None:
    """What the Trainer's own evaluation at `step` logged (with held-out rows it evaluates at the last step),
    so a command need not evaluate twice; None when it did not. Every rank keeps the same log history, so
    under DDP all ranks agree on whether to evaluate again. With --load_best_model_at_end the model is not
    the one evaluated at the last step: None, so the command evaluates the best one it loaded."""
    if trainer.args.load_best_model_at_end:
        return None
    history = trainer.state.log_history
    return next((r for r in reversed(history) if r.get("step") == step and "eval_loss" in r), None)


def _series(records: list[dict[str, Any]]) -> dict[str, tuple[list[int], list[float]]]:
    series: dict[str, tuple[list[int], list[float]]] = {}
    for rec in records:
        for key, value in rec.items():
            if key in ("step", "epoch") or not isinstance(value, (int, float)) or not math.isfinite(value):
                continue
            xs, ys = series.setdefault(key, ([], []))
            xs.append(rec["step"])
            ys.append(float(value))
    return series


def panels(series: dict[str, tuple[list[int], list[float]]], keys: list[str] | None = None) -> list[str]:
    """The quantities worth a panel: a curve needs two points (`train_loss`, the run's mean, has one)."""
    wanted = keys or [
        k for k in series if any(w in k for w in ("loss", "reward", "kl", "accuracy", "margin"))
    ]
    return [k for k in wanted if k in series and len(series[k][0]) > 1]


def plot_curves(records: list[dict[str, Any]], path: Path, keys: list[str] | None = None) -> Path | None:
    """One panel per logged quantity (loss, reward, KL...) against the step; None if nothing to plot."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    series = _series(records)
    wanted = panels(series, keys)
    if not wanted:
        return None
    cols = min(3, len(wanted))
    rows = math.ceil(len(wanted) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.5 * cols, 3.2 * rows), squeeze=False)
    for ax, key in zip(axes.flat, wanted, strict=False):
        xs, ys = series[key]
        ax.plot(xs, ys, marker="o" if len(xs) < 30 else None, markersize=3)
        ax.set_title(key)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(wanted) :]:
        ax.axis("off")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=100, format="png")
    plt.close(fig)
    return path


def write_training_report(
    records: list[dict[str, Any]], folder: str | Path, extra: dict | None = None
) -> Path:
    """training_log.json (every logged record, plus `extra`) and training_curves.png in `folder`."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    write_json(folder / LOG_FILE, {"log": records, **(extra or {})})
    plot_curves(records, folder / PLOT_FILE)
    return folder / LOG_FILE
