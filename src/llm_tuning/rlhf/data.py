"""Preference rows (prompt, chosen, rejected) and prompt rows for the RLHF commands.

    llm-tuning rm --data pairs.jsonl          # {"prompt": ..., "chosen": ..., "rejected": ...}
    llm-tuning ppo --data prompts.jsonl       # {"prompt": ..., "answer": ...}
    llm-tuning kto --data feedback.jsonl      # {"prompt": ..., "completion": ..., "label": true}

Preference rows come in the shapes TRL reads, from JSON, JSONL or CSV:
- plain strings: `prompt`, `chosen`, `rejected`;
- chat: `prompt` (or `messages`) is a list of {role, content} turns ending with the user, and
  `chosen` / `rejected` are strings or lists ending with the assistant's reply;
- implicit prompt: `chosen` and `rejected` are whole conversations sharing every turn but the last.
Unpaired feedback rows (KTO) hold one reply and a verdict: `prompt`, `completion` (a string or an
assistant turn) and `label` (true: a good reply, false: a bad one; "true"/"false" in CSV).
Every problem (a missing key, an empty side, chosen == rejected) is a DataError naming file and row.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from llm_tuning.data.formats import ROLES, Message
from llm_tuning.data.read import DataError, iter_rows
from llm_tuning.data.template import adds_bos, prompt_text


@dataclass(frozen=True)
class PreferencePair:
    prompt: list[Message]  # the conversation the two replies answer
    chosen: str
    rejected: str
    row: int = 0


@dataclass(frozen=True)
class FeedbackRow:
    prompt: list[Message]  # the conversation the reply answers
    completion: str
    label: bool  # True: a desirable reply
    row: int = 0


@dataclass(frozen=True)
class PromptRow:
    prompt: list[Message]
    fields: dict[str, Any] = field(default_factory=dict)  # the row's other columns, for reward functions
    row: int = 0


def _messages(value: Any, path: str | Path, number: int, name: str) -> list[Message]:
    if not isinstance(value, list) or not value:
        raise DataError(path, number, "must be a string or a non-empty list of {role, content} turns", name)
    turns = []
    for i, turn in enumerate(value):
        role = turn.get("role") if isinstance(turn, dict) else None
        content = turn.get("content") if isinstance(turn, dict) else None
        if role not in ROLES or not isinstance(content, str):
            raise DataError(path, number, f"turn {i} is not a {{role, content}} message with a valid role", name,
                            f"valid roles: {', '.join(ROLES)}")  # fmt: skip
        turns.append({"role": role, "content": content})
    return turns


def _reply(value: Any, path: str | Path, number: int, name: str) -> tuple[list[Message], str]:
    """(the turns before the reply, the reply text) of one side of a pair."""
    if isinstance(value, str):
        text, before = value, []
    elif value is None:
        raise DataError(path, number, "is missing", name, "each row needs prompt, chosen and rejected")
    else:
        turns = _messages(value, path, number, name)
        if turns[-1]["role"] != "assistant":
            raise DataError(path, number, "must end with the assistant's reply", name)
        before, text = turns[:-1], turns[-1]["content"]
    if not text.strip():
        raise DataError(path, number, "is empty", name, "both replies need text; remove the row")
    return before, text


def _prompt(row: dict, key: str, path: str | Path, number: int) -> list[Message] | None:
    for name in (key, "messages"):
        value = row.get(name)
        if value is None:
            continue
        if isinstance(value, str):
            if not value.strip():
                raise DataError(path, number, "is empty", name)
            return [{"role": "user", "content": value}]
        return _messages(value, path, number, name)
    return None


def preference_from_row(row: dict[str, Any], path: str | Path = "<rows>", number: int = 0,
                        prompt_key: str = "prompt") -> PreferencePair:  # fmt: skip
    """One preference pair; a DataError names the file, row and field of any problem."""
    for name in ("chosen", "rejected"):
        if name not in row:
            raise DataError(path, number, "is missing", name,
                            f"preference rows need prompt, chosen and rejected; this row has {sorted(row)}")  # fmt: skip
    chosen_before, chosen = _reply(row["chosen"], path, number, "chosen")
    rejected_before, rejected = _reply(row["rejected"], path, number, "rejected")
    prompt = _prompt(row, prompt_key, path, number)
    if prompt is None:
        if not chosen_before:
            raise DataError(path, number, "is missing", prompt_key,
                            "give the prompt, or chosen/rejected as conversations that include it")  # fmt: skip
        if chosen_before != rejected_before:
            raise DataError(path, number, "chosen and rejected conversations differ before the reply", "rejected",
                            "with an implicit prompt, every turn but the last must be the same")  # fmt: skip
        prompt = chosen_before
    else:
        prompt = prompt + chosen_before
    if chosen.strip() == rejected.strip():
        raise DataError(path, number, "is the same text as chosen", "rejected",
                        "a pair must prefer one reply over a different one; fix or remove the row")  # fmt: skip
    return PreferencePair(prompt, chosen, rejected, number)


def read_preferences(path: str | Path, prompt_key: str = "prompt", subset: int = -1) -> list[PreferencePair]:
    """Every pair in a JSON/JSONL/CSV file (the first `subset` if > 0)."""
    pairs = []
    for number, row in iter_rows(path):
        pairs.append(preference_from_row(row, path, number, prompt_key))
        if 0 < subset <= len(pairs):
            break
    if not pairs:
        raise DataError(path, None, "has no rows", hint="add {prompt, chosen, rejected} rows")
    return pairs


LABEL_WORDS = {"true": True, "false": False, "1": True, "0": False}


def _label(value: Any, path: str | Path, number: int) -> bool:
    """A KTO verdict: JSON true/false, or the words true/false (1/0) that a CSV cell holds."""
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in LABEL_WORDS:
        return LABEL_WORDS[value.strip().lower()]
    if value is None:
        raise DataError(path, number, "is missing", "label", "each row needs prompt, completion and label")
    raise DataError(path, number, f"must be true or false, got {value!r}", "label",
                    "true marks a good completion, false a bad one")  # fmt: skip


def feedback_from_row(row: dict[str, Any], path: str | Path = "<rows>", number: int = 0,
                      prompt_key: str = "prompt") -> FeedbackRow:  # fmt: skip
    """One unpaired feedback row; a DataError names the file, row and field of any problem."""
    if "chosen" in row and "completion" not in row:
        raise DataError(path, number, "is missing", "completion", "KTO reads unpaired rows {prompt, completion, "
                        "label}; preference pairs go to dpo, orpo, simpo or cpo")  # fmt: skip
    if row.get("completion") is None:
        raise DataError(path, number, "is missing", "completion",
                        f"feedback rows need prompt, completion and label; this row has {sorted(row)}")  # fmt: skip
    before, completion = _reply(row["completion"], path, number, "completion")
    label = _label(row.get("label"), path, number)
    prompt = _prompt(row, prompt_key, path, number)
    if prompt is None:
        if not before:
            raise DataError(path, number, "is missing", prompt_key,
                            "give the prompt, or the completion as a conversation that includes it")  # fmt: skip
        prompt = before
    else:
        prompt = prompt + before
    return FeedbackRow(prompt, completion, label, number)


def read_feedback(path: str | Path, prompt_key: str = "prompt") -> list[FeedbackRow]:
    """Every {prompt, completion, label} row of a JSON/JSONL/CSV file."""
    rows = [feedback_from_row(row, path, number, prompt_key) for number, row in iter_rows(path)]
    if not rows:
        raise DataError(path, None, "has no rows", hint="add {prompt, completion, label} rows")
    return rows


def feedback_from_pairs(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """KTO rows from preference rows: each pair's chosen reply as a good row, its rejected one as a bad row."""
    out = []
    for row in rows:
        out.append({"prompt": row["prompt"], "completion": row["chosen"], "label": True})
        out.append({"prompt": row["prompt"], "completion": row["rejected"], "label": False})
    return out


def read_prompts(path: str | Path, prompt_key: str = "prompt") -> list[PromptRow]:
    """Prompt rows for PPO / GRPO: `prompt_key` text or `messages` (trailing assistant turns dropped)."""
    rows = []
    for number, row in iter_rows(path):
        prompt = _prompt(row, prompt_key, path, number)
        if prompt is None:
            raise DataError(path, number, "is missing", prompt_key,
                            f"this row has {sorted(row)}; pass --prompt_key naming the prompt's field")  # fmt: skip
        while prompt and prompt[-1]["role"] == "assistant":
            prompt = prompt[:-1]
        if not prompt:
            raise DataError(path, number, "has no user turn to answer", "messages")
        fields = {k: v for k, v in row.items() if k not in (prompt_key, "messages", "prompts", "completions")}
        rows.append(PromptRow(prompt, fields, number))
    if not rows:
        raise DataError(path, None, "has no rows", hint="add rows with a prompt")
    return rows


def render_prompt(tokenizer: Any, messages: list[Message], template: str = "chat",
                  system_prompt: str | None = None) -> str:  # fmt: skip
    """The text the model continues: the chat template with the assistant's turn opened."""
    text = prompt_text(tokenizer, messages, template, system_prompt)
    if template == "none" and adds_bos(tokenizer) and tokenizer.bos_token:
        text = tokenizer.bos_token + text
    return text


def encode_reply(tokenizer: Any, prompt: str, reply: str) -> list[int]:
    """Prompt ids then reply + EOS ids, tokenized apart exactly as a rollout joins them."""
    prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    reply_ids = tokenizer(reply, add_special_tokens=False)["input_ids"]
    return [*prompt_ids, *reply_ids, tokenizer.eos_token_id]
