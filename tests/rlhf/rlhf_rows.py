"""Rows for the RLHF tests (a module of its own: another folder's conftest can shadow `conftest`)."""

from __future__ import annotations

import json
import random
from pathlib import Path


def write_rows(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def arithmetic_rows(n: int, seed: int = 0) -> list[dict]:
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        a, b = rng.randint(1, 20), rng.randint(1, 20)
        wrong = a + b + rng.choice([-2, -1, 1, 10])
        rows.append({"prompt": f"What is {a} + {b}?", "chosen": f"{a} + {b} = {a + b}",
                     "rejected": f"{a} + {b} = {wrong}", "answer": a + b})  # fmt: skip
    return rows
