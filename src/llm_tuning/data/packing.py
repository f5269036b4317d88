"""Padding-free batches: a micro-batch's rows laid end to end in one row, positions restarting per row.

    llm-tuning train --data train.jsonl --packing true      # the default

No padding token is computed, and no row attends to another: with `attention_mask` absent and
`position_ids` restarting at 0, transformers builds a block-diagonal causal mask (sdpa, eager, flex)
or passes the sequence boundaries to flash-attention. The first label of every row becomes -100, so the
last token of one row is never trained to predict the first token of the next; a padded batch never
trains that position either, so the loss is the padded batch's loss (tests/train/test_speed_levers.py).
This is transformers' DataCollatorWithFlattening approach.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from llm_tuning.data.encode import IGNORE_INDEX


@dataclass
class PackedCollator:
    """Rows -> {input_ids, labels, position_ids} of shape (1, total tokens), no attention_mask."""

    def __call__(self, rows: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        input_ids: list[int] = []
        labels: list[int] = []
        positions: list[int] = []
        for r in rows:
            ids = list(r["input_ids"])
            if not ids:
                continue
            row_labels = list(r.get("labels", ids))
            input_ids.extend(ids)
            labels.extend([IGNORE_INDEX, *row_labels[1:]])
            positions.extend(range(len(ids)))
        if not input_ids:
            raise ValueError("PackedCollator got a batch whose rows are all empty")
        return {
            "input_ids": torch.tensor([input_ids], dtype=torch.long),
            "labels": torch.tensor([labels], dtype=torch.long),
            "position_ids": torch.tensor([positions], dtype=torch.long),
        }


def row_lengths(position_ids: torch.Tensor) -> list[int]:
    """The lengths of the rows packed into one (1, total) position_ids tensor."""
    starts = (position_ids[0] == 0).nonzero().flatten().tolist() + [position_ids.shape[-1]]
    return [b - a for a, b in zip(starts, starts[1:], strict=False)]
