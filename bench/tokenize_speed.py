"""Tokenization speed: llm-tuning's batched `tokenize` against the original's per-row encode loop.

    python bench/tokenize_speed.py                    # 50k rows, the embedded model's tokenizer (~1-2 min)
    python bench/tokenize_speed.py --rows 5000 --tiny # a quick self-check on a tiny trained BPE

The original LLM-Tuning read the JSON lines and called `tokenizer.encode` twice per row (prompt, then
target), then built the dataset with `Dataset.from_generator`. llm-tuning's `tokenize` renders each
row's segments, tokenizes 1000 rows' segments in one call of the fast tokenizer, and saves the
columns at once. Both are timed end to end (file in, dataset folder out) on the same rows, with the
original's raw-text format (`--template none`); the chat-template path is timed too, for information.
The two must give the same token ids (checked). Goal: >= 10x.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import benchlib

from llm_tuning.data.read import write_jsonl


def original_loop(path: Path, tokenizer, out: Path, max_length: int = 2048) -> int:
    """The original's tokenize_dataset_rows.py, per row: encode(prompt) + encode(target) + [eos]."""
    from datasets import Dataset

    eos = tokenizer.eos_token_id

    def rows():
        with path.open(encoding="utf-8") as f:
            for line in f:
                example = json.loads(line)
                prompt_ids = tokenizer.encode(example["prompt"], max_length=max_length, truncation=True,
                                              add_special_tokens=False)  # fmt: skip
                target_ids = tokenizer.encode(example["target"], max_length=max_length, truncation=True,
                                              add_special_tokens=False)  # fmt: skip
                input_ids = prompt_ids + target_ids + [eos]
                yield {"input_ids": input_ids[:max_length], "seq_len": len(prompt_ids)}

    dataset = Dataset.from_generator(rows, cache_dir=str(out / "cache"))
    dataset.save_to_disk(str(out / "original"))
    return len(dataset)


def llm_tuning_tokenize(path: Path, model: str, out: Path, template: str) -> tuple[int, Path]:
    from llm_tuning.data.tokenize import TokenizeConfig, run

    result = run(TokenizeConfig(input_file=str(path), model=model, output_dir=str(out / f"ours-{template}"),
                                template=template))  # fmt: skip
    return result.rows, result.path


def timed(fn, *args):
    start = time.perf_counter()
    value = fn(*args)
    return value, time.perf_counter() - start


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rows", type=int, default=50_000)
    p.add_argument("--model", default="smollm2-135m-instruct")
    p.add_argument("--tiny", action="store_true", help="a tiny BPE tokenizer instead of --model's")
    p.add_argument("--no_chat", action="store_true", help="skip timing the chat-template path")
    args = p.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "true")

    from datasets import load_from_disk

    from llm_tuning.models.load import load_tokenizer

    with tempfile.TemporaryDirectory(prefix="bench-tokenize-") as tmp:
        work = Path(tmp)
        os.environ["LLM_TUNING_HOME"] = str(work / "home")  # the tokenizer is the user's; no cache reused
        shared = Path.home() / ".cache" / "llm-tuning" / "models"
        (work / "home").mkdir()
        (work / "home" / "models").symlink_to(shared)
        model = str(benchlib.make_tiny_model(work / "tiny")) if args.tiny else args.model
        data = write_jsonl(benchlib.make_rows(args.rows, seed=3), work / "rows.jsonl")
        tokenizer = load_tokenizer(model)
        tokenizer("warm up")
        n_orig, t_orig = timed(original_loop, data, tokenizer, work)
        (n_ours, folder), t_ours = timed(llm_tuning_tokenize, data, model, work, "none")
        same = load_from_disk(str(work / "original"))["input_ids"] == load_from_disk(str(folder))["input_ids"]
        lines = [f"{args.rows} rows, {os.cpu_count()} CPUs, tokenizer of {'a tiny BPE' if args.tiny else model}",
                 "| path | seconds | rows/s | x original |", "|---|---:|---:|---:|",
                 f"| original: per-row encode loop | {t_orig:.1f} | {n_orig / t_orig:,.0f} | 1.0 |",
                 f"| llm-tuning tokenize, raw text | {t_ours:.1f} | {n_ours / t_ours:,.0f} | {t_orig / t_ours:.1f} |"]  # fmt: skip
        if not args.no_chat:
            (n_chat, _), t_chat = timed(llm_tuning_tokenize, data, model, work, "chat")
            lines.append(f"| llm-tuning tokenize, chat template | {t_chat:.1f} | {n_chat / t_chat:,.0f} "
                         f"| {t_orig / t_chat:.1f} |")  # fmt: skip
    print("\n".join(lines))
    print(f"\nsame token ids as the original: {same}; speed-up {t_orig / t_ours:.1f}x (goal >= 10x)")
    if not same:
        sys.exit(1)


if __name__ == "__main__":
    main()
