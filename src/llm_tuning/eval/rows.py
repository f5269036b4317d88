"""Held-out rows for `eval` and `forgetting`: the prompt to answer and the target, in every row format
`train` reads (prompt/target pairs under --prompt_key / --target_key, alpaca, chat `messages`, ShareGPT).

The target is the last assistant turn; the turns before it (system, earlier turns) are the prompt.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llm_tuning.data.formats import Message, row_to_messages
from llm_tuning.data.read import DataError, iter_rows


@dataclass
class EvalRow:
    number: int  # the row's number in its file (1-based), as DataError names it
    prompt: list[Message]  # the conversation up to the answer
    target: str | None  # the reference answer; None when the file has none (label-free use)
    fields: dict[str, Any]  # the row as read, for user metrics

    @property
    def conversation(self) -> list[Message]:
        return [*self.prompt, {"role": "assistant", "content": self.target or ""}]

    @property
    def question(self) -> str:
        return self.prompt[-1]["content"] if self.prompt else ""


def _split(messages: list[Message]) -> tuple[list[Message], str]:
    last = max(i for i, m in enumerate(messages) if m["role"] == "assistant")
    return messages[:last], messages[last]["content"]


def read_eval_rows(path: str | Path, prompt_key: str = "prompt", target_key: str = "target",
                   limit: int | None = None, targets_for: str | None = None) -> list[EvalRow]:  # fmt: skip
    """Rows of `path`. With `targets_for` (the flags that need them, e.g. "--metrics rouge_l"), a pair row
    without a target is a DataError naming the row and field; without it, prompt-only rows are fine."""
    rows: list[EvalRow] = []
    for number, row in iter_rows(path):
        if prompt_key in row and target_key not in row:
            if targets_for:
                raise DataError(path, number, "is missing", target_key,
                                f"{targets_for} compare replies with a target; this row has fields {sorted(row)}: "
                                "pass --target_key naming the answer's field")  # fmt: skip
            prompt = row_to_messages({**row, target_key: "-"}, prompt_key, target_key, path, number)[:-1]
            rows.append(EvalRow(number, prompt, None, row))
        else:
            prompt, target = _split(row_to_messages(row, prompt_key, target_key, path, number))
            rows.append(EvalRow(number, prompt, target, row))
        if limit and len(rows) >= limit:
            break
    if not rows:
        raise DataError(path, None, "has no rows", hint="give a file with at least one prompt")
    return rows
