"""Turn a data row into a conversation: a list of {role, content} messages.

Recognised without flags, in this order:
- prompt/target pairs under `--prompt_key` / `--target_key` (the original's `q` / `a` rows);
- chat rows: `messages` with roles system / user / assistant (multi-turn: every assistant turn trains);
- ShareGPT rows: `conversations` with `from` human / gpt / system and `value`;
- alpaca rows: `instruction`, optional `input`, `output` (and optional `system`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from llm_tuning.data.read import DataError

Message = dict[str, str]
ROLES = ("system", "user", "assistant")
SHAREGPT_ROLES = {
    "human": "user",
    "user": "user",
    "gpt": "assistant",
    "assistant": "assistant",
    "system": "system",
}


def _text(value: Any, path: str | Path, row: int, field: str) -> str:
    if value is None or isinstance(value, (dict, list)):
        raise DataError(
            path, row, f"must be a string, got {type(value).__name__}", field, "put plain text there"
        )
    return str(value)


def _pair(row: dict, prompt_key: str, target_key: str, path: str | Path, number: int) -> list[Message]:
    if target_key not in row:
        raise DataError(path, number, "is missing", target_key,
                        f"this row has fields {sorted(row)}; pass --target_key with the answer's field")  # fmt: skip
    prompt = _text(row[prompt_key], path, number, prompt_key)
    target = _text(row[target_key], path, number, target_key)
    if not target.strip():
        raise DataError(
            path, number, "is empty", target_key, "every row needs an answer to train on; remove the row"
        )
    return [{"role": "user", "content": prompt}, {"role": "assistant", "content": target}]


def _chat(turns: Any, path: str | Path, number: int, field: str, sharegpt: bool) -> list[Message]:
    if not isinstance(turns, list) or not turns:
        raise DataError(path, number, "must be a non-empty list of turns", field)
    messages = []
    for i, turn in enumerate(turns):
        role = SHAREGPT_ROLES.get(str(turn.get("from"))) if sharegpt else turn.get("role")
        content = turn.get("value" if sharegpt else "content") if isinstance(turn, dict) else None
        if role not in ROLES:
            raise DataError(
                path, number, f"turn {i} has role {role!r}", field, f"valid roles: {', '.join(ROLES)}"
            )
        messages.append({"role": role, "content": _text(content, path, number, f"{field}[{i}]")})
    trained = [m for m in messages if m["role"] == "assistant"]
    if not trained or not any(m["content"].strip() for m in trained):
        raise DataError(path, number, "has no non-empty assistant turn to train on", field)
    return messages


def _alpaca(row: dict, path: str | Path, number: int) -> list[Message]:
    prompt = _text(row["instruction"], path, number, "instruction")
    extra = row.get("input")
    if extra:
        prompt = f"{prompt}\n\n{_text(extra, path, number, 'input')}"
    output = _text(row["output"], path, number, "output")
    if not output.strip():
        raise DataError(
            path, number, "is empty", "output", "every row needs an answer to train on; remove the row"
        )
    messages = [{"role": "user", "content": prompt}, {"role": "assistant", "content": output}]
    if row.get("system"):
        messages.insert(0, {"role": "system", "content": _text(row["system"], path, number, "system")})
    return messages


def row_to_messages(
    row: dict[str, Any],
    prompt_key: str = "prompt",
    target_key: str = "target",
    path: str | Path = "<rows>",
    number: int = 0,
) -> list[Message]:
    """The conversation a row stands for; a DataError names what is missing and what the row has."""
    if prompt_key in row:
        return _pair(row, prompt_key, target_key, path, number)
    if "messages" in row:
        return _chat(row["messages"], path, number, "messages", sharegpt=False)
    if "conversations" in row:
        return _chat(row["conversations"], path, number, "conversations", sharegpt=True)
    if "instruction" in row and "output" in row:
        return _alpaca(row, path, number)
    raise DataError(
        path, number, "is missing", prompt_key,
        f"this row has fields {sorted(row)}; pass --prompt_key/--target_key naming two of them, "
        "or use alpaca (instruction/input/output) or chat (messages) rows",
    )  # fmt: skip


def prompt_messages(prompt: str, system_prompt: str | None = None) -> list[Message]:
    """The messages for asking `prompt` at inference time."""
    messages = [{"role": "user", "content": prompt}]
    if system_prompt:
        messages.insert(0, {"role": "system", "content": system_prompt})
    return messages
