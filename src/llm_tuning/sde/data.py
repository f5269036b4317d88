"""Read a task's rows from JSONL or from BIO/CoNLL files, checked against the task.

    from llm_tuning.sde.data import read_task_rows
    rows = read_task_rows("data/masa_d1_train.jsonl", load_task("masa_d1"))
    rows = read_task_rows("data/genia_test.bio", load_task("genia"))

Every row comes back as `{"text": str, "labels": {slot: value}, ...}` with every slot present, in task order:
a label word for sentiment tasks, a list of span strings for extraction tasks. An optional `evidence`
{slot: text} travels with the row (CoT designs use it); other fields are kept as they are.

JSONL: one object per line, `{"text": ..., "labels": {slot: value or [values]}}`; a `.json` file may also
hold one list of such objects. BIO/CoNLL (`.bio`, `.conll`, `.txt`, `.tsv`): one token per line, the first
column the token and the last the tag (B-X, I-X or O), a blank line between sentences; `-DOCSTART-` lines
are skipped. An I-X that does not continue an X span starts a new one (the CoNLL IOB1 reading).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from llm_tuning.data.read import DataError, read_text
from llm_tuning.sde.tasks import Task, normalize_labels

JSONL_SUFFIXES = (".jsonl", ".json")
BIO_SUFFIXES = (".bio", ".conll", ".txt", ".tsv")


def read_task_rows(path: str | Path, task: Task) -> list[dict[str, Any]]:
    """Rows of a JSONL or BIO/CoNLL file (chosen by suffix), validated against `task`."""
    path = Path(path)
    if path.is_dir():
        raise DataError(path, None, "is a folder", hint="pass a JSONL or BIO/CoNLL file")
    if not path.is_file():
        raise DataError(path, None, "no such file")
    suffix = path.suffix.lower()
    if suffix in JSONL_SUFFIXES + BIO_SUFFIXES:
        rows = read_jsonl_rows(path, task) if suffix in JSONL_SUFFIXES else read_bio_rows(path, task)
        if not rows:
            raise DataError(
                path, None, "has no rows", hint="add rows {text, labels}, one JSON object per line"
            )
        return rows
    raise DataError(
        path, None, f"unknown file type {suffix!r}; use one of {', '.join(JSONL_SUFFIXES + BIO_SUFFIXES)}"
    )


def read_jsonl_rows(path: str | Path, task: Task) -> list[dict[str, Any]]:
    """Rows of a JSONL file (or a .json list), each checked with `check_row`."""
    path = Path(path)
    text = read_text(path)
    if path.suffix.lower() == ".json" and text.lstrip().startswith("["):
        try:
            items = json.loads(text)
        except json.JSONDecodeError as err:
            raise DataError(path, None, f"not valid JSON: {err}") from None
        return [check_row(task, item, f"{path}: row {i + 1}") for i, item in enumerate(items)]
    rows = []
    for line_no, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
        except json.JSONDecodeError as err:
            raise DataError(
                f"{path}:{line_no}", None, f"not valid JSON ({err.msg}); expected one object per line"
            ) from None
        rows.append(check_row(task, item, f"{path}:{line_no}"))
    return rows


def check_row(task: Task, row: Any, where: str = "row") -> dict[str, Any]:
    """A copy of `row` with full, normalised labels; DataError naming `where` and the field if it is bad."""
    if not isinstance(row, dict):
        raise DataError(where, None, f"expected an object with 'text' and 'labels', got {type(row).__name__}")
    text = row.get("text")
    if not isinstance(text, str) or not text.strip():
        raise DataError(where, None, f"field 'text' must be a non-empty string, got {text!r}")
    out = dict(row)
    out["labels"] = normalize_labels(task, row.get("labels"), where)
    evidence = row.get("evidence")
    if evidence is not None:
        if not isinstance(evidence, dict) or not all(isinstance(v, str) for v in evidence.values()):
            raise DataError(where, None, f"field 'evidence' must map slot -> text, got {evidence!r}")
        unknown = [k for k in evidence if k not in task.slots]
        if unknown:
            raise DataError(
                where, None, f"field 'evidence' has slot {unknown[0]!r}; slots: {', '.join(task.slots)}"
            )
    return out


def read_bio_rows(path: str | Path, task: Task) -> list[dict[str, Any]]:
    """Rows of a BIO/CoNLL file: one sentence per row, labels {type: [span strings]}."""
    if task.kind != "extraction":
        raise DataError(
            path, None, f"BIO files hold entity spans; task {task.name} is a {task.kind} task, use JSONL"
        )
    path = Path(path)
    rows: list[dict[str, Any]] = []
    tokens: list[str] = []
    tags: list[str] = []
    first_line = 1
    for line_no, line in enumerate(read_text(path).splitlines(), start=1):
        parts = line.split()
        if parts and parts[0] == "-DOCSTART-":
            continue
        if not parts:
            if tokens:
                rows.append(_bio_row(task, tokens, tags, f"{path}:{first_line}"))
            tokens, tags = [], []
            continue
        if len(parts) < 2:
            raise DataError(f"{path}:{line_no}", None, f"expected 'token<TAB>tag', got {line!r}")
        tag = parts[-1]
        _check_tag(task, tag, f"{path}:{line_no}")
        if not tokens:
            first_line = line_no
        tokens.append(parts[0])
        tags.append(tag)
    if tokens:
        rows.append(_bio_row(task, tokens, tags, f"{path}:{first_line}"))
    return rows


def _check_tag(task: Task, tag: str, where: str) -> None:
    if tag == "O":
        return
    prefix, _, kind = tag.partition("-")
    if prefix not in ("B", "I") or not kind:
        raise DataError(where, None, f"tag {tag!r} is not valid; use O, B-TYPE or I-TYPE")
    if kind not in task.slots:
        raise DataError(
            where,
            None,
            f"tag {tag!r} names type {kind!r}, not a type of task {task.name}; types: {', '.join(task.slots)}",
        )


def _bio_row(task: Task, tokens: list[str], tags: list[str], where: str) -> dict[str, Any]:
    joiner = "" if task.language == "zh" else " "
    labels: dict[str, list[str]] = {slot: [] for slot in task.slots}
    for kind, start, end in bio_to_spans(tags):
        labels[kind].append(joiner.join(tokens[start:end]))
    return check_row(task, {"text": joiner.join(tokens), "labels": labels}, where)


def bio_to_spans(tags: list[str]) -> list[tuple[str, int, int]]:
    """(type, start, end) token spans of a BIO tag sequence, end exclusive, in order of start."""
    spans: list[tuple[str, int, int]] = []
    kind, start = None, 0
    for i, tag in enumerate([*tags, "O"]):
        prefix, _, tag_kind = tag.partition("-")
        continues = prefix == "I" and tag_kind == kind
        if kind is not None and not continues:
            spans.append((kind, start, i))
            kind = None
        if prefix in ("B", "I") and not continues:
            kind, start = tag_kind, i
    return spans
