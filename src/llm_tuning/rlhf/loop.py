"""The online RL loop shared by `llm-tuning ppo` and `llm-tuning grpo`: setup, steps, checkpoints, outputs.

    llm-tuning ppo  --data prompts.jsonl --sft_adapter weights/sft --reward_model weights/reward
    llm-tuning grpo --data questions.jsonl --sft_adapter weights/sft --reward exact_match --reward format

Each algorithm gives `run_online` a step function (prompt rows in, logged numbers out) and the extra
modules it trains (PPO's value head). The loop samples prompts in a seeded order, logs every step to
TensorBoard, saves checkpoint-N folders (adapter, extra modules, optimizer, RNG and loop state) that
`--resume_from_checkpoint` continues exactly, and writes what `train` writes.
"""

from __future__ import annotations

import json
import logging
import math
import random
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from llm_tuning.config import ConfigError, check_output_path, check_positive, check_range, option
from llm_tuning.files import new_folder, write_json
from llm_tuning.models.load import load_model, load_tokenizer
from llm_tuning.models.lora import attach_lora, lora_config
from llm_tuning.reporting import write_training_report
from llm_tuning.rlhf.common import (
    REFERENCE_KINDS,
    add_adapter_from,
    check_adapter_flags,
    reference_kind,
    save_outputs,
    write_outputs,
)
from llm_tuning.rlhf.data import PromptRow, read_prompts, render_prompt
from llm_tuning.rlhf.rewards import load_rewards
from llm_tuning.rlhf.rollout import RewardScorer, SamplingOptions

logger = logging.getLogger(__name__)
STATE_FILE = "loop_state.json"


@dataclass
class RolloutOptions:
    data: str | None = option(None, "JSON/JSONL/CSV of prompt rows (other fields reach reward functions)",
                              aliases=("train_file",))  # fmt: skip
    prompt_key: str = option("prompt", "field holding the prompt (or `messages` for chat rows)")
    template: str = option("chat", "chat: the model's chat template; none: raw text")
    system_prompt: str | None = option(
        None, "system message for the chat template (default: the template's own)"
    )
    max_prompt_length: int = option(512, "keep the last N tokens of longer prompts")
    output_dir: str = option("weights/rl", "where the adapter, logs and checkpoints go")
    sft_adapter: str | None = option(None, "start the policy from this adapter (e.g. from `llm-tuning train`)",
                                     aliases=("sft_model_lora_path", "previous_lora_weights"))  # fmt: skip
    reference: str = option("auto", "KL reference: base (adapters disabled), initial (frozen copy of --sft_adapter "
                            "on the same base), auto (initial with --sft_adapter, else base)", choices=REFERENCE_KINDS)  # fmt: skip
    reward: list[str] = option(
        [],
        "reward function: exact_match, format, module:function or file.py:function; a module or file is "
        "imported and RUNS AS PYTHON CODE with your rights (also when named in a YAML recipe): use only your own",
    )
    reward_weights: list[float] = option([], "one weight per --reward (default 1 each)")
    reward_model: str | None = option(None, "a reward adapter from `llm-tuning rm`, loaded on the same base",
                                      aliases=("reward_model_lora_path",))  # fmt: skip
    reward_sigmoid: bool = option(True, "use sigmoid(reward model score) as the reward, as the original did")
    reward_baseline: float = option(0.0, "subtracted from every reward")
    max_steps: int = option(20, "rollout batches to train on", aliases=("steps",))
    batch_size: int = option(8, "prompts per rollout batch")
    mini_batch_size: int = option(4, "sequences per gradient update")
    learning_rate: float = option(5e-5, "AdamW learning rate")
    max_grad_norm: float = option(1.0, "gradient clipping norm")
    max_new_tokens: int = option(64, "longest sampled reply", aliases=("output_max_length",))
    temperature: float = option(1.0, "sampling temperature (log-probs use the same)")
    top_k: int = option(0, "sample among the k likeliest tokens (0: all)")
    top_p: float = option(1.0, "nucleus sampling mass")
    suppress_eos_first: bool = option(
        False, "forbid EOS as the first reply token (reward models may like empty replies)"
    )
    logging_steps: int = option(1, "log every N steps")
    save_steps: int = option(50, "save a checkpoint every N steps (0: never)")
    save_total_limit: int | None = option(2, "keep at most N checkpoints")
    resume_from_checkpoint: str | None = option(None, "a checkpoint-N folder, or 'latest' in --output_dir")
    overwrite_output_dir: bool = option(False, "start a new run in an --output_dir holding another run's checkpoints "
                                        "(deletes those checkpoints, nothing else)")  # fmt: skip
    seed: int = option(42, "random seed for LoRA init, prompt order and sampling")
    report_to: str = option("tensorboard", "tensorboard or none")

    def __post_init__(self) -> None:
        if not self.data:
            raise ConfigError("give the prompts: --data FILE with a prompt field")
        if not self.reward and not self.reward_model:
            raise ConfigError(
                "give a reward: --reward_model DIR and/or --reward exact_match|format|module:function"
            )
        for name in (
            "max_steps",
            "batch_size",
            "mini_batch_size",
            "max_new_tokens",
            "temperature",
            "learning_rate",
        ):
            check_positive(name, getattr(self, name))
        check_range("top_p", self.top_p, 0, 1, low_open=True)
        check_output_path("output_dir", self.output_dir, folder=True)
        for name in ("top_k", "save_steps"):
            check_positive(name, getattr(self, name), allow_zero=True)
        for name in ("max_prompt_length", "logging_steps", "max_grad_norm"):
            check_positive(name, getattr(self, name))
        if self.save_total_limit is not None and self.save_total_limit < 1:
            raise ConfigError(f"--save_total_limit must be >= 1 (or left out), got {self.save_total_limit}")
        if self.reward_weights and len(self.reward_weights) != len(self.reward):
            raise ConfigError(f"--reward_weights gives {len(self.reward_weights)} weights for {len(self.reward)} "
                              "--reward functions; give one per --reward, in the same order")  # fmt: skip
        if not all(math.isfinite(w) for w in self.reward_weights) or not math.isfinite(self.reward_baseline):
            raise ConfigError("--reward_weights and --reward_baseline must be finite numbers")
        if self.report_to not in ("tensorboard", "none"):
            raise ConfigError(f"--report_to {self.report_to!r}: this loop logs to tensorboard or none")

    def sampling(self) -> SamplingOptions:
        return SamplingOptions(self.max_new_tokens, self.temperature, self.top_k, self.top_p, self.suppress_eos_first,
                               self.max_prompt_length)  # fmt: skip


@dataclass
class Policy:
    model: Any  # PeftModel: "default" is the trained adapter
    tokenizer: Any
    reference: str  # "base" or "initial", see common.reference_context
    scorer: RewardScorer
    rows: list[PromptRow]


@dataclass
class OnlineResult:
    output_dir: Path
    steps: int
    runtime_s: float
    log: list[dict[str, Any]] = field(default_factory=list)

    def summary(self) -> str:
        rewards = [r["reward"] for r in self.log if "reward" in r]
        trend = f"mean reward {rewards[0]:.3f} -> {rewards[-1]:.3f}" if rewards else "no steps run"
        return (
            f"adapter saved to {self.output_dir} after {self.steps} steps ({self.runtime_s:.0f} s): {trend}"
        )


def load_policy(cfg: Any) -> Policy:
    """Base model + trainable policy adapter (+ frozen reference / reward adapters), tokenizer, scorer, rows."""
    from llm_tuning.rlhf.reward_model import RewardAdapter

    rows = read_prompts(cfg.data, cfg.prompt_key)
    check_adapter_flags(cfg)
    load_rewards(cfg.reward, cfg.reward_weights)  # a bad --reward file fails before the model loads
    tokenizer = load_tokenizer(cfg.model, cfg.trust_remote_code)
    base = load_model(cfg.model, cfg.dtype, cfg.device, cfg.trust_remote_code, for_training=True)
    config = None if cfg.sft_adapter else lora_config(base, cfg, dropout=0.0)
    model = attach_lora(base, config, cfg.sft_adapter, "--sft_adapter")
    reference = reference_kind(cfg.reference, cfg.sft_adapter)
    if reference == "initial":
        add_adapter_from(model, cfg.sft_adapter, "reference")
    reward_model = (
        RewardAdapter(model, cfg.reward_model, tokenizer.pad_token_id) if cfg.reward_model else None
    )
    model.eval()  # no dropout in RL: the rollout's log-probs must be reproducible in the update
    scorer = RewardScorer(
        load_rewards(cfg.reward, cfg.reward_weights), reward_model, cfg.reward_sigmoid, cfg.reward_baseline
    )
    logger.info("policy %s; KL reference: %s; reward: %s", cfg.sft_adapter or "new LoRA", reference,
                ", ".join([*(["model " + cfg.reward_model] if cfg.reward_model else []), *cfg.reward]))  # fmt: skip
    return Policy(model, tokenizer, reference, scorer, rows)


def prompt_texts(policy: Policy, rows: list[PromptRow], cfg: Any) -> tuple[list[str], list[str]]:
    """(rendered prompts for the model, the user's last message for reward functions)."""
    rendered = [render_prompt(policy.tokenizer, r.prompt, cfg.template, cfg.system_prompt) for r in rows]
    return rendered, [r.prompt[-1]["content"] for r in rows]


def prompt_order(n_rows: int, step: int, batch_size: int, seed: int) -> list[int]:
    """Row indices of step `step`: seeded shuffles of the rows, one epoch after another (pure, resumable)."""
    out = []
    for k in range(step * batch_size, (step + 1) * batch_size):
        epoch, pos = divmod(k, n_rows)
        order = list(range(n_rows))
        random.Random(seed * 100003 + epoch).shuffle(order)
        out.append(order[pos])
    return out


def minibatch_generator(seed: int, step: int) -> torch.Generator:
    """The minibatch shuffles of step `step` (seeded per step, so a resumed run shuffles the same way)."""
    return torch.Generator().manual_seed(seed * 100003 + step)


def minibatch_updates(optimizer: torch.optim.Optimizer, params: list[nn.Parameter], n: int, epochs: int,
                      size: int, loss_fn: Callable[[torch.Tensor], tuple[torch.Tensor, dict[str, float]]],
                      generator: torch.Generator, max_grad_norm: float) -> dict[str, float]:  # fmt: skip
    """`epochs` passes of shuffled minibatch updates over n sequences; the mean of every logged number."""
    totals: dict[str, list[float]] = {}
    for _ in range(epochs):
        for index in torch.randperm(n, generator=generator).split(size):
            loss, stats = loss_fn(index)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, max_grad_norm)
            optimizer.step()
            for key, value in {"loss": loss.item(), **stats}.items():
                totals.setdefault(key, []).append(value)
    return {key: sum(v) / len(v) for key, v in totals.items()}


# ---- checkpoints -----------------------------------------------------------------------------


def find_checkpoint(cfg: Any) -> tuple[Path | None, dict[str, Any]]:
    """(the checkpoint to resume: a complete one of this run, see checkpoints.py; the run's identity), after
    checking --output_dir."""
    from llm_tuning.checkpoints import file_fingerprints, prepare_output_dir, run_identity

    identity = run_identity(cfg, file_fingerprints([cfg.data]))
    found = prepare_output_dir(cfg.output_dir, identity, cfg.resume_from_checkpoint, cfg.overwrite_output_dir)
    if found is not None and not (found / STATE_FILE).is_file():
        raise ConfigError(f"--resume_from_checkpoint {found}: no {STATE_FILE} there; pass a checkpoint-N folder "
                          "written by ppo / grpo")  # fmt: skip
    return found, identity


def save_checkpoint(cfg: Any, policy: Policy, modules: dict[str, nn.Module], optimizer: torch.optim.Optimizer,
                    state: dict[str, Any], identity: dict[str, Any]) -> Path:  # fmt: skip
    """checkpoint-N: adapter, extra modules, optimizer, RNG and loop state, written whole under a temp name
    and renamed; then this run's oldest ones beyond the limit go (never another's)."""
    from llm_tuning.checkpoints import DONE, list_checkpoints, marker

    folder = Path(cfg.output_dir) / f"checkpoint-{state['step']}"
    extra = {f"{name}.safetensors": module.state_dict() for name, module in modules.items()}
    with new_folder(folder) as tmp:
        write_outputs(policy.model, None, cfg, tmp, extra)
        torch.save({"optimizer": optimizer.state_dict(), "torch_rng": torch.get_rng_state(),
                    "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None}, tmp / "optimizer.pt")  # fmt: skip
        write_json(tmp / STATE_FILE, state, indent=1)
        write_json(tmp / DONE, {"run": identity["id"], "step": state["step"], "identity": identity})
    ours = [p for p in list_checkpoints(cfg.output_dir) if (marker(p) or {}).get("run") == identity["id"]]
    for old in ours[: -cfg.save_total_limit] if cfg.save_total_limit else []:
        shutil.rmtree(old, ignore_errors=True)
    return folder


def read_optimizer_file(path: Path) -> dict[str, Any]:
    """optimizer.pt, loaded weights-only: a crafted checkpoint cannot run code when it is unpickled."""
    import pickle

    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ConfigError(f"{path}: not a plain tensor file (refused: it may hold code, or be damaged): {first}; "
                          "resume from another checkpoint") from None  # fmt: skip


def load_checkpoint(
    folder: Path, policy: Policy, modules: dict[str, nn.Module], optimizer: torch.optim.Optimizer
) -> dict:
    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file

    from llm_tuning.rlhf.common import ADAPTER_WEIGHTS

    set_peft_model_state_dict(policy.model, load_file(str(folder / ADAPTER_WEIGHTS)), adapter_name="default")
    for name, module in modules.items():
        module.load_state_dict(load_file(str(folder / f"{name}.safetensors")))
    saved = read_optimizer_file(folder / "optimizer.pt")
    optimizer.load_state_dict(saved["optimizer"])
    torch.set_rng_state(saved["torch_rng"])
    if saved.get("cuda_rng") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(saved["cuda_rng"])
    logger.info("resumed from %s", folder)
    return json.loads((folder / STATE_FILE).read_text(encoding="utf-8"))


# ---- the loop --------------------------------------------------------------------------------


def _writer(cfg: Any) -> Any:
    if cfg.report_to != "tensorboard":
        return None
    from torch.utils.tensorboard import SummaryWriter

    return SummaryWriter(log_dir=str(Path(cfg.output_dir) / "runs" / time.strftime("%Y%m%d-%H%M%S")))


def run_online(cfg: Any, policy: Policy, step_fn: Callable[[int, list[PromptRow]], dict[str, float]],
               optimizer: torch.optim.Optimizer, modules: dict[str, nn.Module] | None = None,
               extra_state: tuple[Callable[[], dict], Callable[[dict], None]] | None = None) -> OnlineResult:  # fmt: skip
    """Run steps from 0 (or a checkpoint) to max_steps; save checkpoints, the adapter and the report."""
    modules = modules or {}
    get_extra, set_extra = extra_state or (dict, lambda _: None)
    start, records = 0, []
    checkpoint, identity = find_checkpoint(cfg)
    if checkpoint is not None:
        state = load_checkpoint(checkpoint, policy, modules, optimizer)
        start, records = state["step"], state["records"]
        set_extra(state["extra"])
    writer, began = _writer(cfg), time.perf_counter()
    for step in range(start, cfg.max_steps):
        rows = [policy.rows[i] for i in prompt_order(len(policy.rows), step, cfg.batch_size, cfg.seed)]
        record = {"step": step + 1, **step_fn(step, rows)}
        records.append(record)
        if writer is not None:
            for key, value in record.items():
                if key != "step":
                    writer.add_scalar(key, value, step + 1)
        if (step + 1) % cfg.logging_steps == 0 or step + 1 == cfg.max_steps:
            logger.info("step %d/%d  %s", step + 1, cfg.max_steps,
                        "  ".join(f"{k} {v:.4g}" for k, v in record.items() if k != "step"))  # fmt: skip
        if cfg.save_steps and (step + 1) % cfg.save_steps == 0:
            save_checkpoint(
                cfg,
                policy,
                modules,
                optimizer,
                {"step": step + 1, "records": records, "extra": get_extra()},
                identity,
            )
    if writer is not None:
        writer.close()
    runtime = time.perf_counter() - began
    extra = {f"{name}.safetensors": module.state_dict() for name, module in modules.items()}
    save_outputs(policy.model, policy.tokenizer, cfg, cfg.output_dir, extra)
    summary = {"steps": cfg.max_steps, "runtime_s": runtime, "reference": policy.reference,
               "final": records[-1] if records else None}  # fmt: skip
    write_training_report(records, cfg.output_dir, {"summary": summary})
    return OnlineResult(Path(cfg.output_dir), cfg.max_steps, runtime, records)
