"""Shared pieces of the benchmarks: synthetic rows of long-tailed lengths, a tiny random model, the fp32
matmul peak, the peak RSS of a process, and a step clock for Trainer runs.

Imported by bench/train_throughput.py and bench/tokenize_speed.py (run from the repository root).
"""

from __future__ import annotations

import math
import random
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from tiny_models import build_model, build_tokenizer  # noqa: E402  (the tests' tiny model builders)

WORDS = (
    "the of and to in is you that it he was for on are as with his they at be this have from or one had by "
    "word but not what all were we when your can said there use an each which she do how their if will up "
    "other about out many then them these so some her would make like him into time has look two more write "
    "go see number no way could people my than first water been call who oil its now find long down day did "
    "get come made may part over new sound take only little work know place year live me back give most very "
    "after thing our just name good sentence man think say great where help through much before line right "
    "too mean old any same tell boy follow came want show also around form three small set put end does "
    "another well large must big even such because turn here why ask went men read need land different home "
    "us move try kind hand picture again change off play spell air away animal house point page letter mother "
    "answer found study still learn should world high every near add food between own below country plant"
).split()


def long_tailed_lengths(
    count: int, low: int = 32, high: int = 512, median: int = 128, seed: int = 0
) -> list[int]:
    """Row lengths from a log-normal (sigma 0.7) around `median`, clipped to [low, high]: most rows are short,
    a few are long, as in instruction data."""
    rng = random.Random(seed)
    return [min(high, max(low, round(median * math.exp(rng.gauss(0.0, 0.7))))) for _ in range(count)]


def make_rows(
    count: int, low: int = 32, high: int = 512, seed: int = 0, overhead: int = 30
) -> list[dict[str, str]]:
    """Prompt/target rows of roughly `long_tailed_lengths` tokens each (one word ~ one token; the chat template
    adds ~`overhead` tokens); the target is 20-60% of the row."""
    rng = random.Random(seed + 1)
    rows = []
    for length in long_tailed_lengths(count, low, high, seed=seed):
        words = max(8, length - overhead)
        answer = max(3, round(words * rng.uniform(0.2, 0.6)))
        text = [rng.choice(WORDS) for _ in range(words)]
        rows.append(
            {"prompt": " ".join(text[answer:]).capitalize() + "?", "target": " ".join(text[:answer]) + "."}
        )
    return rows


def make_tiny_model(
    folder: Path,
    hidden: int = 64,
    layers: int = 2,
    heads: int = 4,
    kv_heads: int = 2,
    ffn: int | None = None,
    vocab: int | None = None,
) -> Path:
    """A random Llama (default hidden 64, 2 layers) with a ChatML byte-level BPE tokenizer trained on WORDS
    (vocabulary ~1000; `vocab` makes the model's embedding larger, e.g. a stand-in of a real model's shape)."""
    corpus = [" ".join(WORDS)] * 50 + ["user assistant system ?."] * 20
    tokenizer = build_tokenizer(folder, corpus, vocab_size=1000)
    return build_model(folder, vocab_size=max(vocab or 0, len(tokenizer)), hidden_size=hidden,
                       intermediate_size=ffn or 2 * hidden, num_hidden_layers=layers, num_attention_heads=heads,
                       num_key_value_heads=kv_heads, max_position_embeddings=2048, tie_word_embeddings=True)  # fmt: skip


def matmul_peak(seconds: float = 1.5) -> float:
    """Best fp32 matmul FLOP/s over a square and two model-like shapes (tokens x hidden @ hidden x ffn)."""
    import torch

    best = 0.0
    for m, k, n in ((2048, 2048, 2048), (1024, 576, 1536), (1024, 1536, 576)):
        a, b = torch.randn(m, k), torch.randn(k, n)
        a @ b  # warm-up
        count, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds / 3:
            a @ b
            count += 1
        best = max(best, 2 * m * k * n * count / (time.perf_counter() - start))
    return best


def peak_rss_bytes() -> int:
    """This process's peak resident memory (VmHWM), from /proc/self/status; 0 where there is none."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def training_flops_per_token(model: Any, lengths: list[int]) -> float:
    """Model FLOPs per trained token: 4 x frozen + 6 x trainable matmul parameters (forward 2, backward 2 for
    the input gradient, + 2 for a trainable weight's gradient), plus causal attention over each row's own
    length (6 x layers x attention width x n(n+1) per row, averaged per token). A tied embedding counts once,
    as the LM head; an untied input embedding is a lookup, not a matmul."""
    config = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    frozen = sum(p.numel() for p in model.parameters() if not p.requires_grad)
    embed, head = model.get_input_embeddings(), model.get_output_embeddings()
    if head is not None and embed is not None and embed.weight is not head.weight:
        frozen -= embed.weight.numel()
    width = config.num_attention_heads * getattr(
        config, "head_dim", config.hidden_size // config.num_attention_heads
    )
    per_row = [6 * config.num_hidden_layers * width * n * (n + 1) for n in lengths]
    return 4 * frozen + 6 * trainable + sum(per_row) / max(sum(lengths), 1)


def make_clock() -> Any:
    """A TrainerCallback recording (time, input tokens seen) at the end of every optimizer step."""
    from transformers import TrainerCallback

    class StepClock(TrainerCallback):
        def __init__(self) -> None:
            self.marks: list[tuple[float, int]] = []
            self.model: Any = None

        def on_train_begin(
            self, args: Any, state: Any, control: Any, model: Any = None, **kwargs: Any
        ) -> None:
            self.model = model

        def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            self.marks.append((time.perf_counter(), int(state.num_input_tokens_seen)))

        def tokens_per_second(self) -> tuple[float, int, float]:
            """(tokens/s, tokens, seconds) over steps 2..N: the first step's set-up is left out."""
            (t0, n0), (t1, n1) = self.marks[0], self.marks[-1]
            return (n1 - n0) / max(t1 - t0, 1e-9), n1 - n0, t1 - t0

    return StepClock()
