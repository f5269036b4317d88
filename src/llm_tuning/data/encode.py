"""Token ids and loss labels for conversations: labels are -100 wherever the loss is off.

By default only the assistant replies are trained (the original's `no_prompt_loss`, and SDE's
No-MI, which the study found better); `prompt_loss=True` trains on every token (MI).
Segments of many rows are tokenized in one batched call of the fast tokenizer.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from llm_tuning.data.formats import Message
from llm_tuning.data.template import Segment, adds_bos, prompt_segments

IGNORE_INDEX = -100


@dataclass
class Encoded:
    input_ids: list[int]
    labels: list[int]
    truncated: bool = False


def labels_for(
    ids_per_segment: list[list[int]], trained: list[bool], prompt_loss: bool
) -> tuple[list[int], list[int]]:
    """Concatenate segment ids; labels copy the ids of trained segments and are -100 elsewhere."""
    input_ids: list[int] = []
    labels: list[int] = []
    for ids, is_trained in zip(ids_per_segment, trained, strict=True):
        input_ids.extend(ids)
        labels.extend(ids if (is_trained or prompt_loss) else [IGNORE_INDEX] * len(ids))
    return input_ids, labels


def truncate(input_ids: list[int], labels: list[int], max_length: int) -> Encoded:
    """Keep the first `max_length` tokens (the prompt's start and as much answer as fits)."""
    if len(input_ids) <= max_length:
        return Encoded(input_ids, labels)
    return Encoded(input_ids[:max_length], labels[:max_length], truncated=True)


def token_ids(tokenizer: Any, texts: list[str]) -> list[list[int]]:
    """The ids of each text, without special tokens added: the same as `tokenizer(texts)["input_ids"]`,
    through the fast tokenizer's Rust batch call without offsets or a BatchEncoding when there is one."""
    backend = getattr(tokenizer, "_tokenizer", None)
    if backend is not None and hasattr(backend, "encode_batch_fast"):
        return [e.ids for e in backend.encode_batch_fast(texts, add_special_tokens=False)]
    return tokenizer(texts, add_special_tokens=False)["input_ids"]


def prompt_ids(
    tokenizer: Any, messages: list[Message], template: str = "chat", system_prompt: str | None = None
) -> list[int]:
    """The ids a model is given to answer the last user turn: the ids `tokenize` puts before that answer
    (segment by segment; BOS first for raw text when the tokenizer adds one), so what is served is what
    was trained."""
    ids = [i for piece in token_ids(tokenizer, prompt_segments(tokenizer, messages, template, system_prompt))
           for i in piece]  # fmt: skip
    if template == "none" and adds_bos(tokenizer):
        ids.insert(0, tokenizer.bos_token_id)
    return ids


def encode_segments(
    tokenizer: Any,
    rows: list[list[Segment]],
    prompt_loss: bool | list[bool] = False,
    bos_id: int | None = None,
) -> list[tuple[list[int], list[int]]]:
    """(input_ids, labels) for each row's segments, with one tokenizer call for the whole batch.

    `prompt_loss` is one flag for all rows, or one per row (SDE's MI / No-MI travels with each row).
    """
    per_row = prompt_loss if isinstance(prompt_loss, list) else [prompt_loss] * len(rows)
    flat = [text for segments in rows for text, _ in segments]
    ids = token_ids(tokenizer, flat) if flat else []
    out = []
    start = 0
    for segments, row_prompt_loss in zip(rows, per_row, strict=True):
        chunk = ids[start : start + len(segments)]
        start += len(segments)
        input_ids, labels = labels_for(chunk, [t for _, t in segments], row_prompt_loss)
        if bos_id is not None:
            input_ids, labels = [bos_id, *input_ids], [bos_id if row_prompt_loss else IGNORE_INDEX, *labels]
        out.append((input_ids, labels))
    return out


def mark_trained_span(tokenizer: Any, input_ids: list[int], labels: list[int]) -> str:
    """Decode a row with the trained tokens wrapped in [[ ]] so a user sees what the loss covers."""
    parts: list[str] = []
    run: list[int] = []
    run_trained = False
    for token, label in zip(input_ids, labels, strict=True):
        trained = label != IGNORE_INDEX
        if run and trained != run_trained:
            parts.append(_wrap(tokenizer.decode(run), run_trained))
            run = []
        run.append(token)
        run_trained = trained
    if run:
        parts.append(_wrap(tokenizer.decode(run), run_trained))
    return "".join(parts)


def _wrap(text: str, trained: bool) -> str:
    return f"[[{text}]]" if trained else text
