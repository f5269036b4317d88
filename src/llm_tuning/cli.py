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
    "orpo": ("llm_tuning.rlhf.orpo:ORPOConfig", "llm_tuning.rlhf.orpo:run",
             "ORPO of a LoRA adapter on preference pairs (no reference model)"),
    "simpo": ("llm_tuning.rlhf.simpo:SimPOConfig", "llm_tuning.rlhf.simpo:run",
              "SimPO of a LoRA adapter on preference pairs (length-normalised, no reference model)"),
    "cpo": ("llm_tuning.rlhf.cpo:CPOConfig", "llm_tuning.rlhf.cpo:run",
            "CPO of a LoRA adapter on preference pairs (no reference model)"),
    "kto": ("llm_tuning.rlhf.kto:KTOConfig", "llm_tuning.rlhf.kto:run",
            "KTO of a LoRA adapter on unpaired good/bad replies"),
    "grpo": ("llm_tuning.rlhf.grpo:GRPOConfig", "llm_tuning.rlhf.grpo:run", "GRPO with verifiable reward functions"),
    "rloo": ("llm_tuning.rlhf.rloo:RLOOConfig", "llm_tuning.rlhf.rloo:run",
             "RLOO (leave-one-out baseline) with verifiable reward functions"),
    "mix": ("llm_tuning.infer.mix:MixConfig", "llm_tuning.infer.mix:run_mix", "mix weighted adapters into one adapter folder"),
    "merge": ("llm_tuning.infer.mix:MergeConfig", "llm_tuning.infer.mix:run_merge",
              "merge adapters into the base model: a full model folder"),
    "export": ("llm_tuning.infer.export:ExportConfig", "llm_tuning.infer.export:run",
               "write the merged model (or the adapter) as GGUF for llama.cpp / Ollama (+ Modelfile)"),
    "compare": ("llm_tuning.infer.compare:CompareConfig", "llm_tuning.infer.compare:run",
                "answers of the base model, each adapter and their mix, side by side"),
    "eval": ("llm_tuning.eval.evaluate:EvalConfig", "llm_tuning.eval.evaluate:run",
             "score the base model, each adapter and their mix on held-out rows (EM, F1, ROUGE-L, BLEU, loss)"),
    "forgetting": ("llm_tuning.eval.forgetting:ForgettingConfig", "llm_tuning.eval.forgetting:run",
                   "what adapters lost on general questions (score, KL to base) and gained on their domain"),
    "serve": ("llm_tuning.infer.server:ServeConfig", "llm_tuning.infer.server:run",
              "OpenAI-compatible API and chat page for a model and its adapters"),
    "board": ("llm_tuning.board.app:BoardConfig", "llm_tuning.board.app:run",
              "a web page for the whole loop: data, train, evaluate, chat and mix, SDE reports"),
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


def _usage(group: str | None = None) -> str:
    """Every command, or with `group` (e.g. "sde") its subcommands only."""
    names = [n for n in COMMANDS if group is None or n.startswith(group + " ")]
    width = max(map(len, names))
    lines = [f"  {name:<{width}}  {COMMANDS[name][2]}" for name in names]
    head = f"usage: llm-tuning {group} SUBCOMMAND" if group else "usage: llm-tuning COMMAND"
    return (
        f"{head} [RECIPE.yaml] [--flags]\n\n{'subcommands' if group else 'commands'}:\n"
        + "\n".join(lines)
        + ("\n\n`llm-tuning COMMAND --help` lists a command's flags.")
    )


def _group(name: str) -> str | None:
    """`name` when it only prefixes subcommands ("sde"), else None."""
    return name if name not in COMMANDS and any(n.startswith(name + " ") for n in COMMANDS) else None


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
    group = _group(name)
    if group is not None:
        if len(argv) > 1 and argv[1] in ("-h", "--help", "help"):
            print(_usage(group))
            return 0
        subcommands = ", ".join(n.split(" ", 1)[1] for n in COMMANDS if n.startswith(group + " "))
        given = f"unknown subcommand {argv[1]!r}" if len(argv) > 1 else "a subcommand is needed"
        given += f"; choose one of: {subcommands}"
        print(f"llm-tuning {group}: error: {given}\n\n{_usage(group)}", file=sys.stderr)
        return 2
    if name not in COMMANDS:
        print(f"llm-tuning: unknown command {name!r}\n\n{_usage()}", file=sys.stderr)
        return 2
    _setup_logging()
    try:
        return _run(name, argv[1:])
    except SystemExit as exit_:  # argparse: --help (0) or a flag it could not parse (2, message printed)
        return exit_.code if isinstance(exit_.code, int) else 2


def _run(name: str, args: list[str]) -> int:
    from llm_tuning.config import ConfigError, parse_config
    from llm_tuning.data.read import DataError
    from llm_tuning.models.resolve import ModelNotFoundError

    config_ref, run_ref, _ = COMMANDS[name]
    try:
        cfg = parse_config(_load(config_ref), args, prog=f"llm-tuning {name}")
        result = _load(run_ref)(cfg)
    except (ConfigError, DataError, ModelNotFoundError, FileNotFoundError) as err:
        message = " ".join(str(err).split("\n"))  # one line, whatever the library's message looked like
        print(f"llm-tuning {name}: error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"llm-tuning {name}: interrupted", file=sys.stderr)
        return 130
    except Exception as err:  # a bug of ours, not bad input: one line (exit 1); the traceback on request
        if os.environ.get("LLM_TUNING_DEBUG"):
            raise
        print(f"llm-tuning {name}: internal error: {type(err).__name__}: {err} (a bug: please report it with "
              "the command; LLM_TUNING_DEBUG=1 shows the traceback)", file=sys.stderr)  # fmt: skip
        return 1
    summary = getattr(result, "summary", None)
    if callable(summary):
        print(summary())
    return 0


if __name__ == "__main__":
    sys.exit(main())
