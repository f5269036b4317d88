"""The data tab: a file's rows as the CLI reads them, rendered with the model's template, trained span marked.

    preview(tokenizer, "data/train.jsonl", prompt_key="q", target_key="a", max_seq_length=256)

The same functions as `tokenize`: `iter_rows` (JSON, JSONL, CSV), `row_to_messages` (pairs, alpaca,
messages, ShareGPT), `conversation_segments` (the template, trained segments) and `encode_segments`
(token counts). A bad row is listed with the CLI's own error message instead of stopping the preview.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from llm_tuning.data.encode import encode_segments
from llm_tuning.data.formats import row_to_messages
from llm_tuning.data.read import DataError, iter_rows
from llm_tuning.data.template import conversation_segments

MAX_ROWS = 20000  # rows measured for the histogram (a preview, not a full tokenization)


def row_format(row: dict[str, Any], prompt_key: str) -> str:
    """Which of the formats `row_to_messages` would read this row as (its order of checks)."""
    if prompt_key in row:
        return "pairs"
    for key, name in (("messages", "messages"), ("conversations", "sharegpt")):
        if key in row:
            return name
    return "alpaca" if "instruction" in row and "output" in row else "unknown"


def histogram(lengths: list[int], bins: int = 20) -> list[dict[str, int]]:
    if not lengths:
        return []
    low, high = min(lengths), max(lengths)
    width = max(1, -(-(high - low + 1) // bins))
    counts = [0] * (-(-(high - low + 1) // width))
    for n in lengths:
        counts[(n - low) // width] += 1
    return [
        {"from": low + i * width, "to": low + (i + 1) * width - 1, "count": c} for i, c in enumerate(counts)
    ]


def preview(tokenizer: Any, path: str | Path, *, prompt_key: str = "prompt", target_key: str = "target",
            template: str = "chat", system_prompt: str | None = None, max_seq_length: int = 2048,
            show: int = 8, label: str | None = None) -> dict[str, Any]:  # fmt: skip
    """Rows (rendered segments), formats, token-length histogram, overlength count and bad rows."""
    label = label or str(path)
    rows: list[tuple[int, dict]] = []
    try:
        for number, row in iter_rows(path):
            rows.append((number, row))
            if len(rows) >= MAX_ROWS:
                break
    except DataError as err:
        if not rows:
            return {"error": str(err).replace(str(path), label)}
        file_error = str(err).replace(str(path), label)
    else:
        file_error = None
    formats: dict[str, int] = {}
    good, bad = [], []
    for number, row in rows:
        try:
            messages = row_to_messages(row, prompt_key, target_key, label, number)
            segments = conversation_segments(tokenizer, messages, template, system_prompt)
        except (DataError, ValueError) as err:
            bad.append({"row": number, "error": str(err)})
            continue
        formats[row_format(row, prompt_key)] = formats.get(row_format(row, prompt_key), 0) + 1
        good.append((number, segments))
    lengths = [len(ids) for ids, _ in encode_segments(tokenizer, [s for _, s in good])] if good else []
    fields = sorted({k for _, row in rows[:200] for k in row})
    return {
        "rows": len(rows), "fields": fields, "formats": formats, "file_error": file_error,
        "samples": [{"row": n, "segments": [{"text": t, "trained": tr} for t, tr in segs], "tokens": lengths[i]}
                    for i, (n, segs) in enumerate(good[:show])],
        "bad": bad[:50], "bad_count": len(bad), "histogram": histogram(lengths),
        "overlength": sum(n > max_seq_length for n in lengths), "max_seq_length": max_seq_length,
        "longest": max(lengths, default=0),
    }  # fmt: skip
