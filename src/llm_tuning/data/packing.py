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
    """Rows -> {input_ids, labels, position_ids} of shape (1, total tokens), no attention_mask.

    `boundaries` adds the rows' cumulative lengths (`cu_seq_lens_q/k`, `max_length_q/k`), which
    flash-attention and train/packed_attention.py use to attend row by row.
    """

    boundaries: bool = True

    def __call__(self, rows: list[dict[str, Any]]) -> dict[str, Any]:
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
        batch: dict[str, Any] = {
            "input_ids": torch.tensor([input_ids], dtype=torch.long),
            "labels": torch.tensor([labels], dtype=torch.long),
            "position_ids": torch.tensor([positions], dtype=torch.long),
        }
        if self.boundaries:
            lengths = [len(r["input_ids"]) for r in rows if len(r["input_ids"])]
            cumulative = torch.tensor([0, *lengths], dtype=torch.int32).cumsum(0, dtype=torch.int32)
            batch.update(cu_seq_lens_q=cumulative, cu_seq_lens_k=cumulative, max_length_q=max(lengths),
                         max_length_k=max(lengths))  # fmt: skip
        return batch
