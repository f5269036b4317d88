"""Self-distillation replay against forgetting: the base model answers general prompts before training, and
its own answers are mixed into the training data (no labelled general data needed).

    llm-tuning train --data phrases.jsonl --replay 40                       # the built-in general questions
    llm-tuning train --data phrases.jsonl --replay 200 --replay_prompts my_prompts.jsonl

The rows land in OUTPUT_DIR/replay.jsonl (prompt, the base model's greedy reply) and are trained on whole,
like a --data file without a ratio.
"""

from __future__ import annotations

import logging
import random
from pathlib import Path
from typing import Any

from llm_tuning.config import ConfigError
from llm_tuning.data.read import write_jsonl
from llm_tuning.data.template import prompt_text
from llm_tuning.eval.general_set import general_rows
from llm_tuning.eval.rows import read_eval_rows
from llm_tuning.models.generate import GenerationOptions, generate_all
from llm_tuning.models.load import load_model, load_tokenizer

logger = logging.getLogger(__name__)


def replay_prompts(cfg: Any) -> list[list[dict[str, str]]]:
    """The prompts (as conversations) of --replay_prompts, or of the built-in general set."""
    if cfg.replay_prompts:
        return [r.prompt for r in read_eval_rows(cfg.replay_prompts, cfg.prompt_key, cfg.target_key)]
    return [[{"role": "user", "content": row["prompt"]}] for row in general_rows()]


def write_replay_file(cfg: Any, max_new_tokens: int = 128) -> Path:
    """Answer `cfg.replay` general prompts with the base model; write them as training rows."""
    prompts = replay_prompts(cfg)
    if cfg.replay > len(prompts):
        logger.warning("--replay %d: only %d prompts available, replaying them all", cfg.replay, len(prompts))
    chosen = random.Random(cfg.seed).sample(prompts, min(cfg.replay, len(prompts)))
    tokenizer = load_tokenizer(cfg.model, cfg.trust_remote_code)
    model = load_model(cfg.model, cfg.dtype, cfg.device, cfg.trust_remote_code)
    texts = [prompt_text(tokenizer, p, cfg.template, cfg.system_prompt) for p in chosen]
    results, seconds = generate_all(model, tokenizer, texts, GenerationOptions(max_new_tokens=max_new_tokens),
                                    batch_size=8, add_special_tokens=cfg.template == "none")  # fmt: skip
    rows = [{"messages": [*p, {"role": "assistant", "content": r.text}]}
            for p, r in zip(chosen, results, strict=True) if r.text.strip()]  # fmt: skip
    if not rows:
        raise ConfigError(f"--replay {cfg.replay}: the base model gave an empty answer to every replay prompt, so "
                          "there is nothing to replay; use --replay_prompts it can answer, or --data FILE:RATIO")  # fmt: skip
    path = write_jsonl(rows, Path(cfg.output_dir) / "replay.jsonl")
    logger.info("replay: the base model answered %d general prompts in %.0f s (%d non-empty) -> %s", len(chosen),
                seconds, len(rows), path)  # fmt: skip
    del model
    return path
