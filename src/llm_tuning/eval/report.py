"""Tables and files shared by `eval` and `forgetting`: markdown tables, per-row wins and losses against the
base model, and atomic writes (a crash never leaves half a report)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from llm_tuning.eval.metrics import HIGHER_IS_BETTER

RIGHT_OR_WRONG = ("exact_match", "contains")  # 0/1 metrics: "got right" makes sense for them


def write_text_atomic(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
    return path


def write_json_atomic(path: Path, data: Any) -> Path:
    return write_text_atomic(path, json.dumps(data, indent=2, ensure_ascii=False, default=str) + "\n")


def fmt(metric: str, value: float | None) -> str:
    if value is None:
        return "-"
    if metric in ("loss", "perplexity", "kl") or not 0 <= value <= 1:
        return f"{value:.4g}"
    return f"{100 * value:.1f}"


def cell(text: Any, width: int = 0) -> str:
    text = " ".join(str(text if text is not None else "").split()).replace("|", "\\|")
    return text if not width or len(text) <= width else text[: width - 1] + "…"


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in rows]) + "\n"


def text_table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows, strict=True)]
    line = lambda r: "  ".join(f"{c:<{w}}" for c, w in zip(r, widths, strict=True))  # noqa: E731
    return "\n".join([line(header), "  ".join("-" * w for w in widths), *map(line, rows)])


def better(metric: str, new: float, old: float) -> bool:
    """Whether `new` beats `old` on `metric` (lower is better for loss and perplexity)."""
    eps = 1e-9
    return new > old + eps if HIGHER_IS_BETTER.get(metric, True) else new < old - eps


def wins_and_losses(per_row: dict[str, list[float]], base: list[float], metric: str,
                    numbers: list[int]) -> dict[str, list[int]]:  # fmt: skip
    """Row numbers where the variant beats the base ("gained") and where the base beats it ("lost")."""
    out = {}
    for name, scores in per_row.items():
        out[name] = {
            "gained": [
                n for n, new, old in zip(numbers, scores, base, strict=True) if better(metric, new, old)
            ],
            "lost": [
                n for n, new, old in zip(numbers, scores, base, strict=True) if better(metric, old, new)
            ],
        }
    return out
