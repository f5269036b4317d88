"""What a running `llm-tuning` command's log says: the progress bar (step, total, ETA) and the logged numbers.

    progress, records = read_log(text, logging_steps=10)

The Trainer prints its progress bar (tqdm, redrawn with carriage returns) and each `logs` dict as a Python
literal (`{'loss': '6.04', 'learning_rate': '0.0002', ...}`) on stderr; `training_log.json` has the exact
steps once the run has finished, and is preferred then (jobs.py).
"""

from __future__ import annotations

import ast
import math
import re
from typing import Any

BAR = re.compile(r"(\d+)/(\d+) \[([\d:]+)<([\d:?]+)")


def _seconds(text: str) -> float | None:
    if "?" in text:
        return None
    total = 0.0
    for part in text.split(":"):
        total = total * 60 + float(part)
    return total


def _number(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def parse_progress(text: str) -> dict[str, Any] | None:
    """The last progress bar in the log: step, total, elapsed and remaining seconds."""
    bars = list(BAR.finditer(text[-20000:]))
    if not bars:
        return None
    last = bars[-1]
    step, total = int(last.group(1)), int(last.group(2))
    return {
        "step": step,
        "total": total,
        "elapsed_s": _seconds(last.group(3)),
        "eta_s": _seconds(last.group(4)),
    }


def parse_records(text: str, logging_steps: int = 10) -> list[dict[str, float]]:
    """Each logged dict with a loss, its values as numbers; `step` counted from the first bar's position
    (a resumed run starts past 0) in steps of `logging_steps`."""
    first = BAR.search(text)
    offset = int(first.group(1)) if first else 0
    records: list[dict[str, float]] = []
    for line in re.split(r"[\r\n]+", text):
        line = line.strip()
        if not (line.startswith("{'") and line.endswith("}")):
            continue
        try:
            logged = ast.literal_eval(line)  # a literal only: nothing is run
        except (ValueError, SyntaxError):
            continue
        if not isinstance(logged, dict) or not any(k in logged for k in ("loss", "eval_loss")):
            continue
        numbers = {k: n for k, v in logged.items() if (n := _number(v)) is not None}
        step = offset + (len(records) + 1) * logging_steps
        records.append({"step": step, **numbers})
    return records


def tail(text: str, lines: int = 40) -> str:
    """The last lines as a terminal would show them: a progress bar redrawn with \\r keeps its last state."""
    shown = [part.rsplit("\r", 1)[-1] for part in text.rstrip("\r\n").split("\n")]
    return "\n".join(line for line in shown[-lines:])
