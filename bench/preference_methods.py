"""DPO, ORPO, SimPO, CPO and KTO on the demo's arithmetic preference pairs, from the same SFT adapter, measured alike.

    OMP_NUM_THREADS=1 .venv/bin/python bench/preference_methods.py --no_exact_match   # embedded model
    .venv/bin/python bench/preference_methods.py --methods sft,dpo --model TINY --pairs P --sft_adapter A --max_steps 1

9-22 min per method on a shared 2-core machine (OMP_NUM_THREADS=1 there: two threads on a busy machine
ran 3x slower); the methods run one after another in one process; `--methods sft` scores the start alone.

Data: `llm-tuning demo --rlhf`'s preference_pairs.jsonl (480 pairs: the right answer chosen over one
off by 1, 2 or 10) and the main demo's SFT adapter. Every method gets the README's DPO flags (--eval_split
0.1667 -> the same 80 held-out pairs, --max_steps 30, batch 8, lr 5e-5, --max_length 128) and its own
default loss settings. KTO trains on the training pairs made unpaired (chosen -> true, rejected -> false;
a batch of 8 rows is half the replies of 8 pairs). Then, for every adapter the same way
(rlhf/preference_eval.py, against the SFT adapter it started from): held-out preference accuracy (the
chosen reply's log-prob rose more than the rejected one's), the mean log-ratio margin, the policy's own
preference (log p(chosen) > log p(rejected)), and greedy exact match on the demo's 60 held-out questions.
Writes OUTPUT/results.jsonl (one line per method, as each finishes) and prints the Markdown table.
TRL evaluates once, at the end (--eval_steps 10000): the held-out passes cost as much as ~10 training steps.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path
from typing import Any

METHODS = ("dpo", "orpo", "simpo", "cpo", "kto")


def configs(args: argparse.Namespace, out: Path, feedback: tuple[str, str]) -> dict[str, Any]:
    """The command's config per method, built as `llm-tuning METHOD --flags` would build it."""
    from llm_tuning.rlhf.cpo import CPOConfig
    from llm_tuning.rlhf.dpo import DPOConfig
    from llm_tuning.rlhf.kto import KTOConfig
    from llm_tuning.rlhf.orpo import ORPOConfig
    from llm_tuning.rlhf.simpo import SimPOConfig

    common = dict(model=args.model, sft_adapter=args.sft_adapter, max_steps=args.max_steps,
                  per_device_train_batch_size=8, learning_rate=5e-5, max_length=128, logging_steps=5, eval_steps=10_000,
                  save_steps=10_000, report_to="none", overwrite_output_dir=True)  # fmt: skip
    paired = dict(common, data=args.pairs, eval_split=0.1667)
    return {
        "dpo": lambda: DPOConfig(**paired, output_dir=str(out / "dpo")),
        "orpo": lambda: ORPOConfig(**paired, output_dir=str(out / "orpo")),
        "simpo": lambda: SimPOConfig(**paired, output_dir=str(out / "simpo")),
        "cpo": lambda: CPOConfig(**paired, output_dir=str(out / "cpo")),
        "kto": lambda: KTOConfig(
            **common, data=feedback[0], eval_data=feedback[1], output_dir=str(out / "kto")
        ),
    }


def split_pairs(args: argparse.Namespace, out: Path) -> tuple[list, tuple[str, str]]:
    """The 80 held-out pairs (the split every paired method makes) and KTO's train / held-out row files."""
    from llm_tuning.data.read import iter_rows, write_jsonl
    from llm_tuning.rlhf.common import PreferenceDataOptions, load_preference_splits
    from llm_tuning.rlhf.data import feedback_from_pairs

    train, held_out = load_preference_splits(PreferenceDataOptions(data=args.pairs, eval_split=0.1667), 42)
    rows = {number: row for number, row in iter_rows(args.pairs)}
    files = []
    for name, part in (("train", train), ("held_out", held_out)):
        files.append(
            str(write_jsonl(feedback_from_pairs([rows[p.row] for p in part]), out / f"kto_{name}.jsonl"))
        )
    return held_out, (files[0], files[1])


def score(args: argparse.Namespace, adapter: str, pairs: list) -> dict[str, float]:
    """Held-out pair scores against the SFT adapter, and exact match on the held-out questions."""
    from llm_tuning.data.arithmetic import make_split
    from llm_tuning.demo_rlhf import accuracy
    from llm_tuning.models.load import load_model, load_tokenizer
    from llm_tuning.models.lora import attach_lora
    from llm_tuning.rlhf.dpo import DPOConfig
    from llm_tuning.rlhf.preference_eval import held_out_scores

    cfg = DPOConfig(
        model=args.model, data=args.pairs, sft_adapter=args.sft_adapter
    )  # template, system prompt
    model = attach_lora(load_model(args.model, "auto", "auto", False), None, adapter, "--adapter")
    scores = held_out_scores(model, load_tokenizer(args.model), pairs, cfg)
    if not args.no_exact_match:
        _, questions = make_split(
            960, 60, 0
        )  # the demo's held-out questions (outputs/demo/arithmetic_test.jsonl)
        scores["exact_match"] = accuracy(args.model, adapter, questions)
    return scores


def table(results: list[dict[str, Any]]) -> str:
    lines = ["| method | held-out preference accuracy | log-ratio margin | policy prefers chosen | exact match | "
             "TRL's eval reward accuracy | minutes |", "|---|---|---|---|---|---|---|"]  # fmt: skip
    for r in results:
        trl = f"{r['trl_accuracy']:.0%}" if r.get("trl_accuracy") is not None else "-"
        em = f"{r['exact_match']:.0%}" if "exact_match" in r else "-"
        start = r["method"] == "sft"  # the reference itself: its log-ratios are 0 by definition
        pref = "- (the start)" if start else f"{r['preference_accuracy']:.1%}"
        margin = "-" if start else f"{r['logratio_margin']:+.2f}"
        lines.append(f"| {r['method']} | {pref} | {margin} | {r['policy_accuracy']:.1%} | {em} | {trl} | "
                     f"{r['minutes']:.1f} |")  # fmt: skip
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--pairs", default="outputs/demo_rlhf/preference_pairs.jsonl")
    parser.add_argument("--sft_adapter", default="outputs/demo/adapter")
    parser.add_argument("--output_dir", default="outputs/preference_methods")
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--max_steps", type=int, default=30)
    parser.add_argument("--no_exact_match", action="store_true")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    held_out, feedback = split_pairs(args, out)
    builders = configs(args, out, feedback)
    results = []
    for method in args.methods.split(","):
        from llm_tuning.cli import COMMANDS, _load

        if method == "sft":  # the starting point: its own policy preference and exact match
            record = {"method": "sft", "minutes": 0.0, **score(args, args.sft_adapter, held_out)}
        else:
            began = time.perf_counter()
            result = _load(COMMANDS[method][1])(builders[method]())
            minutes = (time.perf_counter() - began) / 60
            record = {"method": method, "minutes": minutes, "train_loss": result.train_loss,
                      "trl_accuracy": result.accuracy, "trl_margin": result.margin, "runner_held_out": result.held_out}  # fmt: skip
            # the paired methods' runner already scored these 80 pairs with the same function; KTO's scored its rows
            reuse = method != "kto" and args.no_exact_match
            record.update(result.held_out if reuse else score(args, str(result.output_dir), held_out))
        results.append(record)
        with open(out / "results.jsonl", "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")
        logging.info("%s", json.dumps(record))
    print(table(results))


if __name__ == "__main__":
    main()
