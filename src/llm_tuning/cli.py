"""The `llm-tuning` command: parse flags into a config and call the command's `run(cfg)`.

llm-tuning --help
llm-tuning train --help
"""

from __future__ import annotations

import importlib
import logging
import os
import sys
import warnings

# command -> (config class, run function, one-line help); imported only when the command runs.
COMMANDS: dict[str, tuple[str, str, str]] = {
    "tokenize": ("llm_tuning.data.tokenize:TokenizeConfig", "llm_tuning.data.tokenize:run",
                 "tokenize a data file with loss masks (cached)"),
    "train": ("llm_tuning.train.sft:TrainConfig", "llm_tuning.train.sft:run", "LoRA supervised fine-tuning"),
    "predict": ("llm_tuning.infer.predict:PredictConfig", "llm_tuning.infer.predict:run",
                "batch predictions for a file of prompts"),
    "chat": ("llm_tuning.infer.chat:ChatConfig", "llm_tuning.infer.chat:run", "chat in the terminal"),
    "rm": ("llm_tuning.rlhf.reward_model:RewardModelConfig", "llm_tuning.rlhf.reward_model:run",
           "train a reward model (LoRA + score head) on preference pairs"),
    "rm score": ("llm_tuning.rlhf.reward_model:ScoreConfig", "llm_tuning.rlhf.reward_model:run_score",
                 "score pairs or replies with a reward model"),
    "ppo": ("llm_tuning.rlhf.ppo:PPOConfig", "llm_tuning.rlhf.ppo:run", "PPO on a LoRA policy (reward model or functions)"),
    "dpo": ("llm_tuning.rlhf.dpo:DPOConfig", "llm_tuning.rlhf.dpo:run", "DPO of a LoRA adapter on preference pairs"),
    "grpo": ("llm_tuning.rlhf.grpo:GRPOConfig", "llm_tuning.rlhf.grpo:run", "GRPO with verifiable reward functions"),
    "mix": ("llm_tuning.infer.mix:MixConfig", "llm_tuning.infer.mix:run_mix", "mix weighted adapters into one adapter folder"),
    "merge": ("llm_tuning.infer.mix:MergeConfig", "llm_tuning.infer.mix:run_merge",
              "merge adapters into the base model: a full model folder"),
    "compare": ("llm_tuning.infer.compare:CompareConfig", "llm_tuning.infer.compare:run",
                "answers of the base model, each adapter and their mix, side by side"),
    "eval": ("llm_tuning.eval.evaluate:EvalConfig", "llm_tuning.eval.evaluate:run",
             "score the base model, each adapter and their mix on held-out rows (EM, F1, ROUGE-L, BLEU, loss)"),
    "forgetting": ("llm_tuning.eval.forgetting:ForgettingConfig", "llm_tuning.eval.forgetting:run",
                   "what adapters lost on general questions (score, KL to base) and gained on their domain"),
    "serve": ("llm_tuning.infer.server:ServeConfig", "llm_tuning.infer.server:run",
              "OpenAI-compatible API and chat page for a model and its adapters"),
    "demo": ("llm_tuning.demo:DemoConfig", "llm_tuning.demo:run",
             "fine-tune the embedded model on arithmetic and show before/after"),
    "sde render": ("llm_tuning.sde.commands:RenderConfig", "llm_tuning.sde.commands:run_render",
                   "write a task's rows as prompt/target JSONL in a sample design"),
    "sde score": ("llm_tuning.sde.commands:ScoreConfig", "llm_tuning.sde.commands:run_score",
                  "score predictions under a task and design"),
    "sde run": ("llm_tuning.sde.runner:GridConfig", "llm_tuning.sde.runner:run",
                "train/predict/score a grid of sample designs and report the best"),
}  # fmt: skip


def _load(ref: str):
    module, name = ref.split(":")
    return getattr(importlib.import_module(module), name)


def _usage() -> str:
    width = max(map(len, COMMANDS))
    lines = [f"  {name:<{width}}  {help_}" for name, (_, _, help_) in COMMANDS.items()]
    return (
        "usage: llm-tuning COMMAND [RECIPE.yaml] [--flags]\n\ncommands:\n"
        + "\n".join(lines)
        + ("\n\n`llm-tuning COMMAND --help` lists a command's flags.")
    )


def _setup_logging() -> None:
    rank = int(os.environ.get("RANK", 0))
    logging.basicConfig(
        level=logging.INFO if rank == 0 else logging.WARNING, format="%(message)s", stream=sys.stderr
    )
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    # PEFT still reads transformers' renamed `is_gradient_checkpointing`; the notice is not the user's business.
    warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_warning()
    except ImportError:
        pass


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(_usage())
        return 0
    name = argv[0]
    if len(argv) > 1 and f"{name} {argv[1]}" in COMMANDS:
        name, argv = f"{name} {argv[1]}", argv[1:]
    if name not in COMMANDS:
        print(f"llm-tuning: unknown command {name!r}\n\n{_usage()}", file=sys.stderr)
        return 2
    _setup_logging()
    from llm_tuning.config import ConfigError, parse_config
    from llm_tuning.data.read import DataError
    from llm_tuning.models.resolve import ModelNotFoundError

    config_ref, run_ref, _ = COMMANDS[name]
    try:
        cfg = parse_config(_load(config_ref), argv[1:], prog=f"llm-tuning {name}")
        result = _load(run_ref)(cfg)
    except (ConfigError, DataError, ModelNotFoundError, FileNotFoundError) as err:
        print(f"llm-tuning {name}: error: {err}", file=sys.stderr)
        return 2
    summary = getattr(result, "summary", None)
    if callable(summary):
        print(summary())
    return 0


if __name__ == "__main__":
    sys.exit(main())
