"""Pad a batch to its own longest row (dynamic padding), labels padded with -100."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from llm_tuning.data.encode import IGNORE_INDEX


@dataclass
class PadCollator:
    pad_token_id: int
    pad_to_multiple_of: int | None = None  # 8 helps tensor cores on GPUs
    padding_side: str = "right"

    def __call__(self, rows: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        longest = max(len(r["input_ids"]) for r in rows)
        if self.pad_to_multiple_of:
            longest = -(-longest // self.pad_to_multiple_of) * self.pad_to_multiple_of
        batch = {"input_ids": [], "labels": [], "attention_mask": []}
        for r in rows:
            n = len(r["input_ids"])
            fill = longest - n
            ids, labels, mask = list(r["input_ids"]), list(r.get("labels", r["input_ids"])), [1] * n
            if self.padding_side == "left":
                batch["input_ids"].append([self.pad_token_id] * fill + ids)
                batch["labels"].append([IGNORE_INDEX] * fill + labels)
                batch["attention_mask"].append([0] * fill + mask)
            else:
                batch["input_ids"].append(ids + [self.pad_token_id] * fill)
                batch["labels"].append(labels + [IGNORE_INDEX] * fill)
                batch["attention_mask"].append(mask + [0] * fill)
        return {k: torch.tensor(v, dtype=torch.long) for k, v in batch.items()}
