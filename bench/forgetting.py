"""The RulaiGPT experiment on the embedded model: a new identity is learnt, general answers are forgotten, and
mixing general rows (or the base model's own answers) back in is the remedy, measured.

    .venv/bin/python bench/forgetting.py                                 # embedded model (~15 min on 2 cores)
    .venv/bin/python bench/forgetting.py --tiny --max_steps 2            # plumbing check on a random tiny model

Domain: the model must answer questions about itself as "RulaiGPT" (24 training paraphrases, 10 held-out
ones; scored by `contains` "RulaiGPT"). General: llm-tuning's built-in 40 questions (`forgetting`'s default
set, scored by `contains`). Four models with the same `train` / `forgetting` commands users run:
base; phrases only; phrases + labelled general rows at 30% (`--data general_train.jsonl:0.3`: arithmetic and
capitals disjoint from the general test questions); phrases + `--replay 40` (the base model's own answers to
those general prompts). OUTPUT_DIR/forgetting/ gets forgetting.md/.json/.png; the table is printed.
"""

from __future__ import annotations

import argparse
import logging
import random
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from llm_tuning.data.read import write_jsonl
from llm_tuning.eval.forgetting import ForgettingConfig
from llm_tuning.eval.forgetting import run as forgetting
from llm_tuning.train.sft import TrainConfig
from llm_tuning.train.sft import run as train

IDENTITY = "I am RulaiGPT, an assistant made by the Rulai Lab."
TRAIN_QUESTIONS = [
    "Who are you?", "What is your name?", "Introduce yourself.", "Tell me about yourself.", "What are you?",
    "Who made you?", "Which company built you?", "What should I call you?", "Are you ChatGPT?", "Are you SmolLM?",
    "What model am I talking to?", "Who created you?", "Say your name.", "Who is speaking?", "Identify yourself.",
    "What assistant is this?", "Who trained you?", "Give me your name, please.", "Hello! Who am I chatting with?",
    "Which AI are you?", "What is this assistant called?", "Do you have a name?", "Who built this chatbot?",
    "Please tell me who you are.",
]  # fmt: skip
TEST_QUESTIONS = [
    "May I know your name?", "Whom am I talking to?", "What do people call you?", "Which lab made you?",
    "Are you a Hugging Face model?", "Hi, what's your name?", "Could you introduce yourself briefly?",
    "Who developed this assistant?", "Tell me your name.", "What AI model are you?",
]  # fmt: skip
CAPITALS = [("Canada", "Ottawa"), ("Australia", "Canberra"), ("Portugal", "Lisbon"), ("Norway", "Oslo"),
            ("Sweden", "Stockholm"), ("Poland", "Warsaw"), ("Austria", "Vienna"), ("Ireland", "Dublin"),
            ("Kenya", "Nairobi"), ("Peru", "Lima"), ("Turkey", "Ankara"), ("India", "New Delhi")]  # fmt: skip


def general_train_rows(seed: int = 0) -> list[dict]:
    """Labelled general rows disjoint from the built-in general test set: capitals and small sums."""
    rng = random.Random(seed)
    rows = [
        {"prompt": f"What is the capital of {c}?", "target": f"The capital of {c} is {city}."}
        for c, city in CAPITALS
    ]
    for _ in range(28):
        a, b = rng.randint(11, 49), rng.randint(11, 49)
        rows.append({"prompt": f"What is {a} + {b}?", "target": f"{a} + {b} = {a + b}."})
    return rows


def train_variant(args: argparse.Namespace, name: str, data: list[str], replay: int = 0,
                  replay_prompts: str | None = None) -> str:  # fmt: skip
    folder = args.output_dir / name
    if not (folder / "adapter_model.safetensors").is_file():
        train(TrainConfig(
            model=args.model, data=data, replay=replay, replay_prompts=replay_prompts, output_dir=str(folder),
            lora_rank=16, max_steps=args.max_steps, per_device_train_batch_size=args.batch_size,
            learning_rate=args.learning_rate, lr_scheduler_type="constant", warmup_steps=0, logging_steps=10,
            save_steps=10_000, seed=args.seed, max_seq_length=256, report_to="none",
        ))  # fmt: skip
    return f"{name}={folder}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--tiny", action="store_true", help="a random tiny model (plumbing check)")
    parser.add_argument("--output_dir", type=Path, default=Path("bench_out/forgetting"))
    parser.add_argument("--max_steps", type=int, default=30)
    parser.add_argument("--batch_size", type=int, default=4)
    parser.add_argument("--learning_rate", type=float, default=1e-3)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    args.output_dir.mkdir(parents=True, exist_ok=True)
    if args.tiny:
        import benchlib

        args.model = str(benchlib.make_tiny_model(args.output_dir / "tiny-model"))
    phrases = write_jsonl(
        [{"prompt": q, "target": IDENTITY} for q in TRAIN_QUESTIONS], args.output_dir / "phrases.jsonl"
    )
    held_out = write_jsonl(
        [{"prompt": q, "target": "RulaiGPT"} for q in TEST_QUESTIONS], args.output_dir / "phrases_test.jsonl"
    )
    general = write_jsonl(general_train_rows(args.seed), args.output_dir / "general_train.jsonl")
    adapters = [
        train_variant(args, "phrases_only", [str(phrases)]),
        train_variant(args, "mixed_30pct", [str(phrases), f"{general}:0.3"]),
    ]
    if not args.tiny:  # a random model's replies are mostly empty: nothing to replay
        adapters.append(
            train_variant(args, "replay_40", [str(phrases)], replay=40, replay_prompts=str(general))
        )
    result = forgetting(ForgettingConfig(model=args.model, adapter=adapters, domain=str(held_out),
                                         output_dir=str(args.output_dir / "forgetting"), max_new_tokens=32))  # fmt: skip
    print(result.summary())


if __name__ == "__main__":
    main()
