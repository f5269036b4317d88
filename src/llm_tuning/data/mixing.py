"""Mix several training files in stated proportions, against forgetting.

    llm-tuning train --data domain.jsonl --data general.jsonl:0.2      # general rows make up 20% of the mix

A `--data` source without a ratio is used whole. A source with a ratio r (0 < r < 1) is sampled to make up
r of the mixed set: without repetition while it has rows enough, whole passes plus a sample when it is too
small. With sources W used whole and ratios r_i, the mix has T = |W| / (1 - sum r_i) rows and source i gives
round(r_i x T) of them. At least one source goes whole, and the ratios sum to less than 1.
"""

from __future__ import annotations

import logging
import random
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llm_tuning.config import ConfigError

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class DataSource:
    path: str
    ratio: float | None = None  # share of the mixed set; None: every row, once

    @property
    def spec(self) -> str:
        return self.path if self.ratio is None else f"{self.path}:{self.ratio:g}"


def parse_data_source(spec: str) -> DataSource:
    """`file` or `file:RATIO` (a file whose own name ends in `:number` is taken as a file when it exists)."""
    match = re.fullmatch(r"(.+):(\d*\.?\d+(?:e-?\d+)?)", spec)
    if not match or Path(spec).exists():
        return DataSource(spec)
    ratio = float(match.group(2))
    if not 0 < ratio < 1:
        raise ConfigError(
            f"--data {spec}: the ratio {ratio:g} must be between 0 and 1 (the share of the mixed set)"
        )
    return DataSource(match.group(1), ratio)


def mix_counts(sources: list[DataSource], sizes: list[int]) -> list[int]:
    """Rows each source gives to the mix (see the module docstring)."""
    whole = sum(size for s, size in zip(sources, sizes, strict=True) if s.ratio is None)
    ratios = sum(s.ratio for s in sources if s.ratio is not None)
    specs = " ".join(f"--data {s.spec}" for s in sources)
    if not any(s.ratio is None for s in sources):
        raise ConfigError(f"{specs}: give at least one --data without a ratio (used whole); the ratios are shares "
                          "of the mix around it, e.g. --data domain.jsonl --data general.jsonl:0.2")  # fmt: skip
    if ratios >= 1:
        raise ConfigError(f"{specs}: the ratios add up to {ratios:g}; they must leave room (< 1) for the sources "
                          "used whole")  # fmt: skip
    total = whole / (1 - ratios)
    return [
        size if s.ratio is None else round(s.ratio * total) for s, size in zip(sources, sizes, strict=True)
    ]


def sample_indices(size: int, count: int, rng: random.Random) -> list[int]:
    """`count` row indices of a source of `size` rows: whole passes, then a sample without repetition."""
    if size == 0:
        return []
    passes, rest = divmod(count, size)
    return [i for _ in range(passes) for i in range(size)] + rng.sample(range(size), rest)


def mix_datasets(datasets: list[Any], sources: list[DataSource], seed: int = 42) -> tuple[Any, list[dict]]:
    """(one shuffled `datasets.Dataset` mixing the tokenized sources, a summary row per source)."""
    from datasets import concatenate_datasets

    sizes = [len(d) for d in datasets]
    empty = [s.spec for s, size in zip(sources, sizes, strict=True) if size == 0 and s.ratio is not None]
    if empty:
        raise ConfigError(f"--data {empty[0]}: the file has no rows to sample from")
    counts = mix_counts(sources, sizes)
    rng = random.Random(seed)
    parts = [d.select(sample_indices(len(d), n, rng)) for d, n in zip(datasets, counts, strict=True)]
    mixed = concatenate_datasets(parts).shuffle(seed=seed)
    total = max(len(mixed), 1)
    summary = [{"source": s.path, "rows_in_file": size, "rows_used": n, "share": n / total,
                "ratio": s.ratio} for s, size, n in zip(sources, sizes, counts, strict=True)]  # fmt: skip
    for row in summary:
        logger.info("mixed training set: %s gives %d rows (of %d, %.1f%% of %d)", row["source"], row["rows_used"],
                    row["rows_in_file"], 100 * row["share"], len(mixed))  # fmt: skip
    return mixed, summary
