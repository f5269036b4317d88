"""The RLHF demo: reward model, PPO, GRPO and RLOO on the embedded model's arithmetic adapter, on the CPU.

    llm-tuning demo --rlhf          (the lead's demo command calls run_rlhf_demo)

Starts from the main demo's arithmetic SFT adapter (outputs/demo/adapter; trained here if absent),
trains a reward model on pairs where the correct answer is chosen over a wrong one, runs PPO against
that reward model, GRPO and RLOO against the exact-match and format rewards, and measures exact-match
accuracy on the main demo's held-out questions before and after each stage.
"""

from __future__ import annotations

import logging
import random
import time
from dataclasses import dataclass, field
from pathlib import Path

from llm_tuning.config import DEFAULT_MODEL, option
from llm_tuning.data.arithmetic import Question, make_split, to_rows
from llm_tuning.data.formats import prompt_messages
from llm_tuning.data.read import write_jsonl
from llm_tuning.data.template import prompt_text
from llm_tuning.eval.answers import is_correct
from llm_tuning.models.adapters import load_with_adapters
from llm_tuning.models.generate import GenerationOptions, generate_all
from llm_tuning.rlhf.data import feedback_from_pairs
from llm_tuning.rlhf.grpo import GRPOConfig
from llm_tuning.rlhf.grpo import run as grpo
from llm_tuning.rlhf.ppo import PPOConfig
from llm_tuning.rlhf.ppo import run as ppo
from llm_tuning.rlhf.reward_model import RewardModelConfig
from llm_tuning.rlhf.reward_model import run as train_reward_model
from llm_tuning.rlhf.rloo import RLOOConfig
from llm_tuning.rlhf.rloo import run as rloo

logger = logging.getLogger(__name__)


@dataclass
class RLHFDemoConfig:
    """Reward model, PPO, GRPO and RLOO on the arithmetic SFT adapter, with held-out accuracy at each stage."""

    model: str = option(DEFAULT_MODEL, "the base model")
    output_dir: str = option("outputs/demo_rlhf", "where the data, adapters and reports go")
    sft_adapter: str = option("outputs/demo/adapter", "the arithmetic SFT adapter (trained here if missing)")
    sft_steps: int = option(60, "SFT steps when the adapter must be trained (batch 16, lr 1e-3, rank 16)")
    train_size: int = option(960, "training questions (as the main demo, whose held-out set is reused)")
    test_size: int = option(60, "held-out questions")
    rm_pairs: int = option(480, "preference pairs for the reward model (a sixth held out)")
    rm_epochs: float = option(2.0, "reward model epochs")
    rm_learning_rate: float = option(5e-4, "reward model learning rate")
    ppo_steps: int = option(8, "PPO rollout batches of --rl_batch prompts")
    grpo_steps: int = option(8, "GRPO (and RLOO) steps of --rl_batch / 2 prompts x 4 replies")
    rl_batch: int = option(8, "prompts per PPO step (GRPO: half as many prompts, 4 replies each)")
    rl_learning_rate: float = option(1e-4, "PPO, GRPO and RLOO learning rate")
    seed: int = option(0, "seed for the questions and every stage")


@dataclass
class RLHFDemoResult:
    stages: list[dict] = field(default_factory=list)  # {stage, accuracy, seconds, note}
    reward_model_accuracy: float | None = None
    total_seconds: float = 0.0
    output_dir: Path = Path(".")

    def summary(self) -> str:
        lines = ["", f"{'stage':<28} {'held-out exact match':>21}  {'minutes':>7}  note", "-" * 80]
        for s in self.stages:
            acc = f"{s['accuracy']:.0%}" if s.get("accuracy") is not None else "-"
            lines.append(f"{s['stage']:<28} {acc:>21}  {s['seconds'] / 60:>7.1f}  {s.get('note', '')}")
        lines += ["", f"total {self.total_seconds / 60:.1f} min; adapters and reports in {self.output_dir}"]
        return "\n".join(lines)


def wrong_answer(q: Question, rng: random.Random) -> str:
    """The question's worded answer with a plausible wrong result (off by 1, 2 or 10, or a digit)."""
    wrong = q.answer + rng.choice([-10, -2, -1, 1, 2, 10])
    return f"{q.a} {q.op} {q.b} = {wrong}"


def preference_rows(questions: list[Question], seed: int) -> list[dict]:
    rng = random.Random(seed)
    return [{"prompt": q.prompt, "chosen": q.target, "rejected": wrong_answer(q, rng)} for q in questions]


def accuracy(model: str, adapter: str, questions: list[Question]) -> float:
    """Greedy exact-match accuracy of base + adapter on the questions."""
    lm, tokenizer = load_with_adapters(model, [adapter])
    prompts = [prompt_text(tokenizer, prompt_messages(q.prompt)) for q in questions]
    results, _ = generate_all(lm, tokenizer, prompts, GenerationOptions(max_new_tokens=24), batch_size=30)
    return sum(is_correct(r.text, q.answer) for r, q in zip(results, questions, strict=True)) / len(questions)


def ensure_sft_adapter(cfg: RLHFDemoConfig, train_file: Path) -> tuple[str, float]:
    """The SFT adapter folder (trained with the main demo's recipe if missing) and the seconds spent."""
    if (Path(cfg.sft_adapter) / "adapter_config.json").is_file():
        return cfg.sft_adapter, 0.0
    from llm_tuning.train.sft import TrainConfig
    from llm_tuning.train.sft import run as train

    folder = Path(cfg.output_dir) / "sft_adapter"
    logger.info(
        "== no SFT adapter at %s: training one (%d steps) into %s", cfg.sft_adapter, cfg.sft_steps, folder
    )
    start = time.perf_counter()
    train(TrainConfig(model=cfg.model, data=str(train_file), output_dir=str(folder), lora_rank=16,
                      per_device_train_batch_size=16, max_steps=cfg.sft_steps, learning_rate=1e-3, logging_steps=10,
                      save_steps=cfg.sft_steps, save_total_limit=1, seed=cfg.seed, max_seq_length=256,
                      overwrite_output_dir=True))  # its own folder: a rerun with other flags replaces it  # fmt: skip
    return str(folder), time.perf_counter() - start


def run_rlhf_demo(cfg: RLHFDemoConfig) -> RLHFDemoResult:
    """SFT adapter -> reward model -> PPO, GRPO and RLOO, with held-out accuracy before and after each stage."""
    began = time.perf_counter()
    out = Path(cfg.output_dir)
    train_q, test_q = make_split(cfg.train_size, cfg.test_size, cfg.seed)
    train_file = write_jsonl(to_rows(train_q), out / "arithmetic_train.jsonl")
    pairs = preference_rows(train_q[: cfg.rm_pairs], cfg.seed)
    pairs_file = write_jsonl(pairs, out / "preference_pairs.jsonl")
    write_jsonl(feedback_from_pairs(pairs), out / "feedback_rows.jsonl")  # for `llm-tuning kto`
    prompts_file = write_jsonl([{"prompt": q.prompt, "answer": q.answer} for q in train_q[cfg.rm_pairs :]],
                               out / "rl_prompts.jsonl")  # fmt: skip
    result = RLHFDemoResult(output_dir=out)
    sft, seconds = ensure_sft_adapter(cfg, train_file)
    sft_acc = accuracy(cfg.model, sft, test_q)
    result.stages.append(
        {"stage": "SFT adapter (start)", "accuracy": sft_acc, "seconds": seconds, "note": sft}
    )

    logger.info("== reward model on %d pairs (correct answer chosen over a wrong one)", cfg.rm_pairs)
    start = time.perf_counter()
    rm = train_reward_model(RewardModelConfig(
        model=cfg.model, data=str(pairs_file), output_dir=str(out / "reward_model"), sft_adapter=sft,
        eval_split=1 / 6, num_train_epochs=cfg.rm_epochs, per_device_train_batch_size=8,
        learning_rate=cfg.rm_learning_rate,
        logging_steps=4, eval_steps=10_000, save_steps=10_000, seed=cfg.seed, max_length=128,
    ))  # fmt: skip
    result.reward_model_accuracy = rm.eval_accuracy
    result.stages.append({"stage": "reward model", "accuracy": None, "seconds": time.perf_counter() - start,
                          "note": f"pairwise accuracy {rm.eval_accuracy:.0%} on {rm.eval_pairs} held-out pairs"})  # fmt: skip

    common = dict(model=cfg.model, data=str(prompts_file), sft_adapter=sft, learning_rate=cfg.rl_learning_rate,
                  max_new_tokens=16, seed=cfg.seed, save_steps=0, mini_batch_size=4)  # fmt: skip
    logger.info("== PPO against the reward model, %d steps", cfg.ppo_steps)
    start = time.perf_counter()
    ppo_out = ppo(PPOConfig(**common, output_dir=str(out / "ppo"), reward_model=str(out / "reward_model"),
                            max_steps=cfg.ppo_steps, batch_size=cfg.rl_batch, ppo_epochs=2, init_kl_coef=0.05,
                            suppress_eos_first=True))  # fmt: skip
    ppo_acc = accuracy(cfg.model, str(ppo_out.output_dir), test_q)
    result.stages.append({"stage": f"PPO ({cfg.ppo_steps} steps)", "accuracy": ppo_acc,
                          "seconds": time.perf_counter() - start, "note": _trend(ppo_out.log, "reward/model")})  # fmt: skip

    # GRPO and RLOO: the same rollouts and verifiable rewards, group-mean vs leave-one-out baselines
    for name, config_class, train, steps in (("GRPO", GRPOConfig, grpo, cfg.grpo_steps),
                                             ("RLOO", RLOOConfig, rloo, cfg.grpo_steps)):  # fmt: skip
        logger.info("== %s with exact-match and format rewards, %d steps", name, steps)
        start = time.perf_counter()
        run = train(config_class(**common, output_dir=str(out / name.lower()), reward=["exact_match", "format"],
                                 max_steps=steps, batch_size=max(1, cfg.rl_batch // 2), num_generations=4))  # fmt: skip
        acc = accuracy(cfg.model, str(run.output_dir), test_q)
        result.stages.append({"stage": f"{name} ({steps} steps)", "accuracy": acc,
                              "seconds": time.perf_counter() - start, "note": _trend(run.log, "reward/exact_match")})  # fmt: skip
    result.total_seconds = time.perf_counter() - began
    write_jsonl(result.stages, out / "stages.jsonl")
    return result


def _trend(log: list[dict], key: str) -> str:
    values = [r[key] for r in log if key in r]
    return f"{key} {values[0]:.2f} -> {values[-1]:.2f} (training batches)" if values else ""
