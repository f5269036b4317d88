"""Batch predict: the batch engine against a plain loop of `model.generate` over batches of the same size.

    .venv/bin/python bench/predict_speed.py                       # embedded SmolLM2-135M, 32 rows, batch 8
    .venv/bin/python bench/predict_speed.py --tiny --rows 64      # a random tiny Llama (plumbing check)

The same rows (long-tailed prompt lengths from benchlib, and instructions that ask for one word up to a long
explanation, so answer lengths are long-tailed too) go through both, greedy, in one process, one after the
other: `generate_all` (rows sorted by prompt length, finished rows leave, waiting rows join) and
`generate_batches` (the previous way: `model.generate` per fixed batch, sorted by length too, every row
decoding until the batch's longest answer ends: the strongest plain loop, and the ratios' baseline). Also
the engine without its prompt-lookup drafts (`lookahead=0`), the plain loop over the rows in file order (as
one writes it without sorting), and transformers' own prompt lookup (`prompt_lookup_num_tokens`, which
`generate` runs only at batch 1). Answers may run to predict's default of 256 new tokens, so their tail is
the prompts' own. With `--repeat N` the setups take turns N times and each reports its median time. Prints
rows/s, generated tokens/s, the ratio to the sorted plain loop and to the one in file order, and how many
answers are identical to the plain loop's.
"""

from __future__ import annotations

import argparse
import logging
import random
import statistics
import tempfile
import time
from pathlib import Path

import benchlib

from llm_tuning.data.formats import prompt_messages
from llm_tuning.data.template import prompt_text
from llm_tuning.models.generate import GenerationOptions, generate, generate_all, generate_batches
from llm_tuning.models.load import load_model, load_tokenizer
from llm_tuning.models.resolve import resolve_model

RUNS = {
    "engine": "engine (lookahead 4)",
    "engine0": "engine, no lookahead",
    "plain": "plain generate",
    "plain_unsorted": "plain generate, file order",
    "hf_lookup": "generate, prompt lookup, batch 1",
}  # --runs key: the row's label
ASKS = ["Answer in one word:", "Answer in one short sentence:", "Summarize in two sentences:",
        "Explain in detail, with examples:"]  # fmt: skip


def prompts_for(count: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    rows = benchlib.make_rows(count, low=16, high=256, seed=seed)
    # mostly short answers, a few long ones: the tail the plain loop waits for
    return [f"{rng.choices(ASKS, weights=(4, 3, 2, 1))[0]} {r['prompt']}" for r in rows]


def in_file_order(model, tokenizer, prompts: list[str], opts: GenerationOptions, batch_size: int):
    """The plain loop as written without our sorting: `model.generate` over consecutive batches of the rows."""
    start = time.perf_counter()
    results = []
    for i in range(0, len(prompts), batch_size):
        results += generate(model, tokenizer, prompts[i : i + batch_size], opts)
    return results, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--tiny", action="store_true", help="a random tiny Llama instead of --model")
    parser.add_argument("--rows", type=int, default=32)
    parser.add_argument("--batch_size", type=int, default=8)
    parser.add_argument(
        "--max_new_tokens",
        type=int,
        default=GenerationOptions().max_new_tokens,
        help="predict's default: the answers' own long tail, not one cut at a small cap",
    )
    parser.add_argument("--runs", default=",".join(RUNS), help=f"comma-separated, of: {', '.join(RUNS)}")
    parser.add_argument("--repeat", type=int, default=1, help="rounds of every run; seconds are medians")
    parser.add_argument("--lookahead_hf", type=int, default=10, help="transformers' prompt_lookup_num_tokens")
    args = parser.parse_args()
    names = args.runs.split(",")
    if args.repeat < 1:
        parser.error(f"--repeat: at least 1, got {args.repeat}")
    for name in names:
        if name not in RUNS:
            parser.error(f"--runs: unknown run {name!r}; choose from {', '.join(RUNS)}")
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    with tempfile.TemporaryDirectory() as tmp:
        folder = str(benchlib.make_tiny_model(Path(tmp))) if args.tiny else resolve_model(args.model)
        tokenizer, model = load_tokenizer(folder), load_model(folder, device="cpu")
    model.eval()
    prompts = [prompt_text(tokenizer, prompt_messages(p), "chat") for p in prompts_for(args.rows)]
    opts = GenerationOptions(max_new_tokens=args.max_new_tokens)
    generate_all(model, tokenizer, prompts[:2], GenerationOptions(max_new_tokens=2), 2)  # warm-up
    runs = {}
    hf_lookup = {"prompt_lookup_num_tokens": args.lookahead_hf}
    contenders = {
        "engine": lambda: generate_all(model, tokenizer, prompts, opts, args.batch_size),
        "engine0": lambda: generate_all(model, tokenizer, prompts, opts, args.batch_size, lookahead=0),
        "plain": lambda: generate_batches(model, tokenizer, prompts, opts, args.batch_size),
        "plain_unsorted": lambda: in_file_order(model, tokenizer, prompts, opts, args.batch_size),
        "hf_lookup": lambda: generate_batches(model, tokenizer, prompts, opts, 1, **hf_lookup),
    }  # fmt: skip
    times: dict[str, list[float]] = {}
    for _ in range(args.repeat):  # interleaved, so a burst of load elsewhere hits every setup alike
        for name in names:
            start = time.perf_counter()
            results, _ = contenders[name]()
            times.setdefault(RUNS[name], []).append(time.perf_counter() - start)
            runs[RUNS[name]] = (results, statistics.median(times[RUNS[name]]))
    lengths = sorted(r.new_tokens for r in next(iter(runs.values()))[0])
    print(f"{args.rows} rows, batch {args.batch_size}, max_new_tokens {args.max_new_tokens}, model "
          f"{'tiny random llama' if args.tiny else args.model}; answer tokens min/median/max "
          f"{lengths[0]}/{lengths[len(lengths) // 2]}/{lengths[-1]}; median seconds of {args.repeat} "
          "interleaved round(s)")  # fmt: skip
    base_results, base_seconds = runs.get(RUNS["plain"], next(iter(runs.values())))
    file_order = runs.get(RUNS["plain_unsorted"], (None, None))[1]
    print(f"{'':34} {'seconds':>8} {'rows/s':>8} {'gen tok/s':>10} {'vs plain':>9} {'vs file order':>14} "
          f"{'identical':>10}")  # fmt: skip
    for name, (results, seconds) in runs.items():
        tokens = sum(r.new_tokens for r in results)
        same = sum(a.text == b.text for a, b in zip(results, base_results, strict=True))
        vs_file_order = f"{file_order / seconds:.2f}x" if file_order else "-"
        print(f"{name:34} {seconds:8.1f} {len(results) / seconds:8.2f} {tokens / seconds:10.1f} "
              f"{base_seconds / seconds:8.2f}x {vs_file_order:>14} {same:>6}/{len(results)}")  # fmt: skip


if __name__ == "__main__":
    main()
