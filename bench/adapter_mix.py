"""What does mixing two LoRA adapters do to each one's skill? Two skills, each adapter alone, a weight sweep.

    .venv/bin/python bench/adapter_mix.py                          # embedded model, ~40 steps x batch 8 each
    .venv/bin/python bench/adapter_mix.py --tiny --max_steps 3      # plumbing check on a random tiny model

Skill 1 is the demo's arithmetic ("What is 47 + 38?" -> "47 + 38 = 85", data/arithmetic.py), scored by the
final number. Skill 2 has a distinct output style: "Shout this: green house water" -> "GREEN HOUSE WATER!",
scored by exact match. One adapter is trained per skill with the same `train` command users run; then the
base model, each adapter and mixes at several weights (per --methods) answer both held-out sets. The table
goes to stdout and OUTPUT_DIR/report.md, the numbers to results.json; trained adapters are reused on re-runs.
"""

from __future__ import annotations

import argparse
import json
import logging
import random
import time
from pathlib import Path

import benchlib

from llm_tuning.data.arithmetic import make_split, to_rows
from llm_tuning.data.formats import prompt_messages
from llm_tuning.data.read import write_jsonl
from llm_tuning.data.template import prompt_text
from llm_tuning.eval.answers import is_correct
from llm_tuning.infer.compare import answer_with
from llm_tuning.models.adapters import AdapterSpec, load_adapters, mix_adapters
from llm_tuning.models.generate import GenerationOptions
from llm_tuning.models.load import load_model, load_tokenizer
from llm_tuning.train.sft import TrainConfig
from llm_tuning.train.sft import run as train


def shout_split(n_train: int, n_test: int, seed: int = 0) -> tuple[list[dict], list[dict]]:
    """Disjoint rows asking to repeat 3-5 common words in capitals with an exclamation mark."""
    rng = random.Random(seed)
    phrases: dict[str, None] = {}
    while len(phrases) < n_train + n_test:
        phrases[" ".join(rng.choice(benchlib.WORDS) for _ in range(rng.randint(3, 5)))] = None
    rows = [{"prompt": f"Shout this: {p}", "target": p.upper() + "!"} for p in phrases]
    return rows[n_test:], rows[:n_test]


def train_adapter(args: argparse.Namespace, model: str, rows: list[dict], folder: Path) -> float:
    """Train one adapter on `rows` unless `folder` already has one; the training seconds (0 if reused)."""
    if (folder / "adapter_model.safetensors").is_file():
        return 0.0
    data = write_jsonl(rows, folder.parent / f"{folder.name}_train.jsonl")
    result = train(TrainConfig(
        model=model, data=str(data), output_dir=str(folder), lora_rank=args.lora_rank, max_steps=args.max_steps,
        per_device_train_batch_size=args.batch_size, learning_rate=args.learning_rate, logging_steps=10,
        save_steps=args.max_steps, save_total_limit=1, seed=args.seed, max_seq_length=128, report_to="none",
    ))  # fmt: skip
    return result.runtime_s


def variants(args: argparse.Namespace) -> list[tuple[str, str, float, float]]:
    """(name, method, arithmetic weight, shout weight) for the base, each adapter alone, and every mix."""
    rows = [("base", "-", 0.0, 0.0), ("math", "-", 1.0, 0.0), ("shout", "-", 0.0, 1.0)]
    for method in args.methods.split(","):
        for pair in args.pairs.split(","):
            w_math, w_shout = (float(x) for x in pair.split(":"))
            rows.append((f"{method}_{round(100 * w_math)}_{round(100 * w_shout)}", method, w_math, w_shout))
    return rows


def is_uppercase(text: str) -> bool:
    letters = [c for c in text if c.isalpha()]
    return bool(letters) and all(c.isupper() for c in letters)


def evaluate(args: argparse.Namespace, model_name: str, adapters: dict[str, Path], tests: dict) -> list[dict]:
    tokenizer = load_tokenizer(model_name)
    model = load_adapters(load_model(model_name), [AdapterSpec(n, str(p)) for n, p in adapters.items()])
    opts = GenerationOptions(max_new_tokens=args.max_new_tokens)
    math_prompts = [prompt_text(tokenizer, prompt_messages(q.prompt)) for q in tests["math"]]
    shout_prompts = [prompt_text(tokenizer, prompt_messages(r["prompt"])) for r in tests["shout"]]
    results = []
    for name, method, w_math, w_shout in variants(args):
        if method != "-":
            specs = [
                AdapterSpec("math", str(adapters["math"]), w_math),
                AdapterSpec("shout", str(adapters["shout"]), w_shout),
            ]
            mix_adapters(model, specs, method, args.density, name)
        start = time.perf_counter()
        math_replies = answer_with(model, tokenizer, name, math_prompts, opts, args.eval_batch)
        shout_replies = answer_with(model, tokenizer, name, shout_prompts, opts, args.eval_batch)
        results.append({
            "variant": name, "method": method, "w_math": w_math, "w_shout": w_shout,
            "arithmetic": sum(is_correct(r, q.answer) for r, q in zip(math_replies, tests["math"], strict=True)) / len(math_replies),
            "shout": sum(r.strip() == t["target"] for r, t in zip(shout_replies, tests["shout"], strict=True)) / len(shout_replies),
            "shout_caps": sum(map(is_uppercase, shout_replies)) / len(shout_replies),
            "eval_s": time.perf_counter() - start, "examples": {"math": math_replies[:3], "shout": shout_replies[:3]},
        })  # fmt: skip
        logging.info(
            "%s: arithmetic %.0f%%, shout %.0f%%",
            name,
            100 * results[-1]["arithmetic"],
            100 * results[-1]["shout"],
        )
    return results


def markdown(results: list[dict], header: str) -> str:
    lines = [header, "", "| model | method | math weight | shout weight | arithmetic | shout exact | shout in capitals |",
             "|---|---|---|---|---|---|---|"]  # fmt: skip
    for r in results:
        weights = ("", "") if r["method"] == "-" else (f"{r['w_math']:g}", f"{r['w_shout']:g}")
        lines.append(f"| {r['variant']} | {r['method']} | {weights[0]} | {weights[1]} | {r['arithmetic']:.0%} | "
                     f"{r['shout']:.0%} | {r['shout_caps']:.0%} |")  # fmt: skip
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument(
        "--tiny", action="store_true", help="use a random tiny Llama (checks the plumbing only)"
    )
    parser.add_argument("--train_size", type=int, default=320)
    parser.add_argument("--test_size", type=int, default=40)
    parser.add_argument("--max_steps", type=int, default=40)
    parser.add_argument("--batch_size", type=int, default=8)
    parser.add_argument("--learning_rate", type=float, default=1e-3)
    parser.add_argument("--lora_rank", type=int, default=16)
    parser.add_argument("--methods", default="linear,cat", help="comma-separated mix methods")
    parser.add_argument(
        "--pairs", default="0.75:0.25,0.5:0.5,0.25:0.75,1:1", help="math:shout weights to sweep"
    )
    parser.add_argument("--density", type=float, default=None, help="for ties / dare_* methods")
    parser.add_argument("--max_new_tokens", type=int, default=24)
    parser.add_argument("--eval_batch", type=int, default=40)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output_dir", default="outputs/adapter_mix_bench")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    model = str(benchlib.make_tiny_model(out / "tiny-model")) if args.tiny else args.model
    math_train, math_test = make_split(args.train_size, args.test_size, args.seed)
    shout_train, shout_test = shout_split(args.train_size, args.test_size, args.seed)
    adapters = {"math": out / "math", "shout": out / "shout"}
    seconds = {name: train_adapter(args, model, rows, adapters[name])
               for name, rows in (("math", to_rows(math_train)), ("shout", shout_train))}  # fmt: skip
    results = evaluate(args, model, adapters, {"math": math_test, "shout": shout_test})
    header = (f"Adapter mixing on {model}: {args.max_steps} steps x batch {args.batch_size}, LoRA r={args.lora_rank}; "
              f"{args.test_size} held-out questions per skill (training s: {seconds})")  # fmt: skip
    table = markdown(results, header)
    (out / "report.md").write_text(table, encoding="utf-8")
    (out / "results.json").write_text(
        json.dumps({"args": vars(args), "train_s": seconds, "results": results}, indent=1)
    )
    print(table)


if __name__ == "__main__":
    main()
