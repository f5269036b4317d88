"""The main job: teach the embedded SmolLM2-135M arithmetic with LoRA on the CPU, before/after.

    llm-tuning demo

Generates + - x / questions (the original's simple_math_4op idea), measures the base model's
exact-match accuracy on held-out questions, trains a LoRA adapter through the same `train` command
users run, measures again, and shows a few answers side by side.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from llm_tuning.config import DEFAULT_MODEL, option
from llm_tuning.data.arithmetic import Question, make_split, to_rows
from llm_tuning.data.formats import prompt_messages
from llm_tuning.data.read import write_jsonl
from llm_tuning.data.template import prompt_text
from llm_tuning.eval.answers import is_correct
from llm_tuning.models.adapters import apply_adapters, parse_adapter_spec
from llm_tuning.models.generate import GenerationOptions, generate_all
from llm_tuning.models.load import load_model, load_tokenizer
from llm_tuning.train.sft import TrainConfig
from llm_tuning.train.sft import run as train

logger = logging.getLogger(__name__)


@dataclass
class DemoConfig:
    """Fine-tune the embedded model on arithmetic and show before/after accuracy."""

    model: str = option(DEFAULT_MODEL, "the model to teach")
    output_dir: str = option("outputs/demo", "where the data, adapter and predictions go")
    train_size: int = option(960, "training questions")
    test_size: int = option(60, "held-out questions")
    max_steps: int = option(60, "optimizer steps")
    batch_size: int = option(16, "rows per step")
    learning_rate: float = option(1e-3, "peak learning rate")
    lora_rank: int = option(16, "LoRA rank")
    seed: int = option(0, "seed for the questions and the training")
    show: int = option(8, "answers shown side by side")
    rlhf: bool = option(False, "then a reward model, PPO and GRPO on the arithmetic adapter (demo_rlhf.py)")


@dataclass
class DemoResult:
    adapter: Path
    accuracy_before: float
    accuracy_after: float
    train_seconds: float
    total_seconds: float
    examples: list[dict] = field(default_factory=list)

    def summary(self) -> str:
        width = max(len(e["question"]) for e in self.examples) if self.examples else 10
        lines = ["", f"{'question':<{width}}  {'before':<22} after", "-" * (width + 46)]
        for e in self.examples:
            lines.append(
                f"{e['question']:<{width}}  {_short(e['before'], e['ok_before']):<22} {_short(e['after'], e['ok_after'])}"
            )
        lines += [
            "",
            f"exact-match accuracy on {len(self.examples) and self.examples[0]['of']} held-out questions: "
            f"{self.accuracy_before:.0%} before -> {self.accuracy_after:.0%} after LoRA "
            f"({self.train_seconds / 60:.1f} min of training, {self.total_seconds / 60:.1f} min in all)",
            f"adapter: {self.adapter}",
            f'chat with it: llm-tuning chat --adapter {self.adapter} --message "What is 23 + 58?"',
        ]
        return "\n".join(lines)


def _short(text: str, ok: bool) -> str:
    text = text.replace("\n", " ")
    text = text if len(text) <= 18 else text[:17] + "…"
    return f"{'✓' if ok else '✗'} {text}"


def answer_all(
    model_name: str, questions: list[Question], adapter: str | None, max_new_tokens: int = 96
) -> list[str]:
    """Greedy answers; 96 new tokens leave the base model room to finish its worded reasoning."""
    tokenizer = load_tokenizer(model_name)
    model = load_model(model_name)
    if adapter:
        model = apply_adapters(model, [parse_adapter_spec(adapter)])
    prompts = [prompt_text(tokenizer, prompt_messages(q.prompt)) for q in questions]
    results, seconds = generate_all(
        model, tokenizer, prompts, GenerationOptions(max_new_tokens=max_new_tokens), batch_size=30
    )
    logger.info("answered %d questions in %.1f s", len(questions), seconds)
    return [r.text for r in results]


def run(cfg: DemoConfig) -> Any:
    if cfg.rlhf:
        from llm_tuning.demo_rlhf import RLHFDemoConfig, run_rlhf_demo

        sft_adapter = str(Path(cfg.output_dir) / "adapter")
        return run_rlhf_demo(RLHFDemoConfig(model=cfg.model, sft_adapter=sft_adapter, train_size=cfg.train_size,
                                            test_size=cfg.test_size, seed=cfg.seed))  # fmt: skip
    start = time.perf_counter()
    out = Path(cfg.output_dir)
    train_q, test_q = make_split(cfg.train_size, cfg.test_size, cfg.seed)
    train_file = write_jsonl(to_rows(train_q), out / "arithmetic_train.jsonl")
    write_jsonl(to_rows(test_q), out / "arithmetic_test.jsonl")

    logger.info("== 1/3: the base model answers %d held-out questions", len(test_q))
    before = answer_all(cfg.model, test_q, adapter=None)

    logger.info("== 2/3: LoRA fine-tuning on %d questions", len(train_q))
    adapter_dir = out / "adapter"
    result = train(TrainConfig(
        model=cfg.model, data=str(train_file), output_dir=str(adapter_dir), lora_rank=cfg.lora_rank,
        per_device_train_batch_size=cfg.batch_size, max_steps=cfg.max_steps, learning_rate=cfg.learning_rate,
        logging_steps=10, save_steps=cfg.max_steps, save_total_limit=1, seed=cfg.seed, max_seq_length=256,
        overwrite_output_dir=True,  # the demo's own folder: a rerun with other flags replaces its checkpoint
    ))  # fmt: skip

    logger.info("== 3/3: the fine-tuned model answers the same questions")
    after = answer_all(cfg.model, test_q, adapter=str(adapter_dir))
    rows = [{"question": q.prompt, "answer": q.answer, "before": b, "after": a,
             "ok_before": is_correct(b, q.answer), "ok_after": is_correct(a, q.answer), "of": len(test_q)}
            for q, b, a in zip(test_q, before, after, strict=True)]  # fmt: skip
    write_jsonl(rows, out / "predictions.jsonl")
    acc_before = sum(r["ok_before"] for r in rows) / len(rows)
    acc_after = sum(r["ok_after"] for r in rows) / len(rows)
    return DemoResult(adapter_dir, acc_before, acc_after, result.runtime_s, time.perf_counter() - start,
                      rows[: cfg.show])  # fmt: skip
