"""Reward model: a LoRA adapter plus a scalar head on the base model, trained on preference pairs.

    llm-tuning rm --data pairs.jsonl --output_dir weights/reward --max_length 512 \
        --train_subset -1 --eval_subset -1 --num_train_epochs 1 --eval_steps 50 --save_steps 100
    llm-tuning rm score --adapter weights/reward --data pairs.jsonl

The model is AutoModelForSequenceClassification(num_labels=1) built from the same base; the score head
is saved with the adapter (PEFT modules_to_save). Loss: -log sigmoid(r_chosen - r_rejected) (TRL's
RewardTrainer). Each side is scored as prompt (chat template) + reply + EOS, tokenized the way a PPO
rollout joins them, at the last non-pad token. `RewardAdapter` puts the same reward model onto a causal
LM as a second adapter, so PPO's policy and reward share one base model.
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from llm_tuning.config import (
    ConfigError,
    LoraOptions,
    ModelOptions,
    check_choice,
    check_output_path,
    check_positive,
    option,
    validate_groups,
)
from llm_tuning.data.read import DataError, iter_rows, write_jsonl
from llm_tuning.models.adapter_check import check_adapter_fits, check_adapter_folder
from llm_tuning.models.load import load_tokenizer, pick_device, pick_dtype
from llm_tuning.models.lora import lora_config
from llm_tuning.models.resolve import ModelNotFoundError, resolve_model
from llm_tuning.reporting import LogCollector, write_training_report
from llm_tuning.rlhf.common import (
    PreferenceDataOptions,
    PreferenceTrainerOptions,
    add_adapter_from,
    begin_run,
    check_adapter_flags,
    keep_short,
    load_preference_splits,
    save_outputs,
)
from llm_tuning.rlhf.data import (
    PreferencePair,
    encode_reply,
    preference_from_row,
    read_prompts,
    render_prompt,
)
from llm_tuning.rlhf.reward_math import pairwise_accuracy
from llm_tuning.training_options import trainer_arguments

logger = logging.getLogger(__name__)
HEAD_NAMES = ("score", "classifier")


@dataclass
class RewardModelConfig(ModelOptions, LoraOptions, PreferenceDataOptions, PreferenceTrainerOptions):
    """Train a reward model (LoRA + scalar head) on {prompt, chosen, rejected} pairs."""

    output_dir: str = option("weights/reward", "where the reward adapter, logs and checkpoints go")
    center_rewards_coefficient: float | None = option(None, "pull mean rewards toward 0 (TRL's, e.g. 0.01)")

    def __post_init__(self) -> None:
        validate_groups(self)


@dataclass
class RewardModelResult:
    output_dir: Path
    train_loss: float
    steps: int
    eval_accuracy: float | None
    eval_margin: float | None
    eval_pairs: int
    log: list[dict[str, Any]] = field(default_factory=list)

    def summary(self) -> str:
        held_out = (f"pairwise accuracy {self.eval_accuracy:.1%} on {self.eval_pairs} held-out pairs "
                    f"(mean margin {self.eval_margin:+.3f})" if self.eval_accuracy is not None else "no held-out pairs")  # fmt: skip
        return f"reward model saved to {self.output_dir}: {held_out}; train loss {self.train_loss:.4f} over {self.steps} steps"


def seqcls_model(model: str, dtype: str, device: str, trust_remote_code: bool, pad_token_id: int) -> Any:
    """AutoModelForSequenceClassification(num_labels=1) with pad_token_id set (it pools the last non-pad token)."""
    from transformers import AutoModelForSequenceClassification

    try:
        from trl.trainer.reward_trainer import (
            suppress_seqcls_warning,  # quiets "score.weight newly initialized"
        )
    except ImportError:
        suppress_seqcls_warning = contextlib.nullcontext
    target = pick_device(device)
    try:
        with suppress_seqcls_warning():
            rm = AutoModelForSequenceClassification.from_pretrained(
                resolve_model(model),
                num_labels=1,
                dtype=pick_dtype(dtype, target),
                trust_remote_code=trust_remote_code,
            )
    except OSError as err:
        raise ModelNotFoundError(f"could not load model {model!r} as a sequence classifier: {err}") from err
    rm.config.pad_token_id = pad_token_id
    return rm.to(target)


def head_name(model: nn.Module) -> str:
    for name in HEAD_NAMES:
        if isinstance(getattr(model, name, None), nn.Module):
            return name
    raise ValueError(f"{type(model).__name__} has no score head named {' or '.join(HEAD_NAMES)}")


def build_reward_model(cfg: RewardModelConfig, pad_token_id: int) -> Any:
    """A PeftModel: new LoRA (or one initialised from --sft_adapter) + a trainable score head."""
    from peft import LoraConfig, get_peft_model

    rm = seqcls_model(cfg.model, cfg.dtype, cfg.device, cfg.trust_remote_code, pad_token_id)
    head = head_name(rm)
    if cfg.sft_adapter:  # same rank and targets as the SFT adapter, then its LoRA weights
        check_adapter_fits(rm, cfg.sft_adapter, "--sft_adapter")
        sft = LoraConfig.from_pretrained(cfg.sft_adapter)
        config = LoraConfig(r=sft.r, lora_alpha=sft.lora_alpha, lora_dropout=cfg.lora_dropout, target_modules=sft.target_modules,
                            use_dora=sft.use_dora, use_rslora=sft.use_rslora, task_type="SEQ_CLS", modules_to_save=[head])  # fmt: skip
        model = get_peft_model(rm, config)
        add_adapter_from(model, cfg.sft_adapter, "default", trainable=True)
        logger.info("reward model LoRA initialised from %s", cfg.sft_adapter)
        return model
    config = lora_config(rm, cfg, task_type="SEQ_CLS", modules_to_save=[head])
    return get_peft_model(rm, config)


def encode_pairs(tokenizer: Any, pairs: list[PreferencePair], template: str, system_prompt: str | None,
                 max_length: int | None, path: str) -> list[dict]:  # fmt: skip
    """[{chosen_ids, rejected_ids}] for the pairs that fit max_length tokens (all when None)."""
    encoded = []
    for pair in pairs:
        prompt = render_prompt(tokenizer, pair.prompt, template, system_prompt)
        encoded.append(
            (encode_reply(tokenizer, prompt, pair.chosen), encode_reply(tokenizer, prompt, pair.rejected))
        )
    kept = keep_short(encoded, max_length, path) if max_length else range(len(encoded))
    return [{"chosen_ids": encoded[i][0], "rejected_ids": encoded[i][1]} for i in kept]


@torch.no_grad()
def score_sequences(
    model: Any, sequences: list[list[int]], pad_token_id: int, batch_size: int = 8
) -> torch.Tensor:
    """Raw reward of each token sequence (right-padded batches through the sequence classifier), (n,)."""
    model.eval()
    device = next(model.parameters()).device
    scores = []
    for start in range(0, len(sequences), batch_size):
        chunk = sequences[start : start + batch_size]
        width = max(map(len, chunk))
        ids = torch.full((len(chunk), width), pad_token_id, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for i, seq in enumerate(chunk):
            ids[i, : len(seq)], mask[i, : len(seq)] = torch.tensor(seq), 1
        scores.append(
            model(input_ids=ids.to(device), attention_mask=mask.to(device)).logits[:, 0].float().cpu()
        )
    return torch.cat(scores) if scores else torch.zeros(0)


def pair_scores(
    model: Any, rows: list[dict], pad_token_id: int, batch_size: int
) -> tuple[torch.Tensor, torch.Tensor]:
    chosen = score_sequences(model, [r["chosen_ids"] for r in rows], pad_token_id, batch_size)
    rejected = score_sequences(model, [r["rejected_ids"] for r in rows], pad_token_id, batch_size)
    return chosen, rejected


def run(cfg: RewardModelConfig) -> RewardModelResult:
    """Read and encode the pairs, train with TRL's RewardTrainer, measure held-out accuracy, save."""
    from datasets import Dataset
    from transformers import set_seed
    from trl import RewardConfig, RewardTrainer

    set_seed(cfg.seed)
    train_pairs, eval_pairs = load_preference_splits(cfg, cfg.seed)
    check_adapter_flags(cfg)
    tokenizer = load_tokenizer(cfg.model, cfg.trust_remote_code)
    train_rows = encode_pairs(
        tokenizer, train_pairs, cfg.template, cfg.system_prompt, cfg.max_length, cfg.data
    )
    eval_rows = encode_pairs(tokenizer, eval_pairs, cfg.template, cfg.system_prompt, cfg.max_length,
                             cfg.eval_data or cfg.data)  # fmt: skip
    logger.info("reward model: %d training pairs, %d held out", len(train_rows), len(eval_rows))
    model = build_reward_model(cfg, tokenizer.pad_token_id)
    dtype = pick_dtype(cfg.dtype, pick_device(cfg.device))
    args = trainer_arguments(cfg, RewardConfig, bool(eval_rows), dtype, max_length=None,
                             center_rewards_coefficient=cfg.center_rewards_coefficient)  # fmt: skip
    collector = LogCollector()
    marks = begin_run(cfg, collector)
    trainer = RewardTrainer(model=model, args=args, train_dataset=Dataset.from_list(train_rows),
                            eval_dataset=Dataset.from_list(eval_rows) if eval_rows else None,
                            processing_class=tokenizer, callbacks=[collector, marks])  # fmt: skip
    marks.trainer = trainer
    output = marks.finish(trainer.train(resume_from_checkpoint=marks.resume_argument()), collector.records)
    accuracy = margin = None
    if eval_rows:
        chosen, rejected = pair_scores(
            trainer.model, eval_rows, tokenizer.pad_token_id, cfg.per_device_eval_batch_size
        )
        accuracy, margin = pairwise_accuracy(chosen, rejected).item(), (chosen - rejected).mean().item()
    if trainer.is_world_process_zero():
        save_outputs(trainer.model, tokenizer, cfg, cfg.output_dir)
        summary = {"train_loss": output.training_loss, "steps": output.global_step, "eval_accuracy": accuracy,
                   "eval_margin": margin, "eval_pairs": len(eval_rows), "train_pairs": len(train_rows)}  # fmt: skip
        write_training_report(collector.records, cfg.output_dir, {"summary": summary})
    return RewardModelResult(Path(cfg.output_dir), output.training_loss, output.global_step, accuracy, margin,
                             len(eval_rows), collector.records)  # fmt: skip


# ---- the reward model on a policy's base model -----------------------------------------------


def pooled_index(input_ids: torch.Tensor, pad_token_id: int) -> torch.Tensor:
    """Each row's rightmost token that is not padding: where a sequence classifier reads its score."""
    positions = torch.arange(input_ids.shape[-1], device=input_ids.device)
    return (positions * (input_ids != pad_token_id)).argmax(-1)


class RewardAdapter:
    """A reward model loaded as adapter "reward" on a causal LM PeftModel, with its score head beside it."""

    name = "reward"

    def __init__(self, peft_model: Any, adapter_dir: str | Path, pad_token_id: int) -> None:
        rest = add_adapter_from(peft_model, adapter_dir, self.name, flag="--reward_model")
        weights = {k.rsplit(".", 1)[-1]: v for k, v in rest.items() if any(f"{h}." in k for h in HEAD_NAMES)}
        if "weight" not in weights or weights["weight"].shape[0] != 1:
            raise ConfigError(f"--reward_model {adapter_dir}: no scalar score head in the adapter; "
                              "pass a folder written by `llm-tuning rm`")  # fmt: skip
        param = next(peft_model.parameters())
        self.head = nn.Linear(weights["weight"].shape[1], 1, bias="bias" in weights).to(
            param.device, param.dtype
        )
        self.head.load_state_dict(weights)
        self.head.requires_grad_(False)
        self.model, self.pad_token_id = peft_model, pad_token_id

    @torch.no_grad()
    def score(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Raw rewards (batch,) of left- or right-padded sequences, equal to the sequence classifier's."""
        from llm_tuning.rlhf.common import use_adapter

        position_ids = (attention_mask.cumsum(-1) - 1).clamp(min=0)
        training = self.model.training
        self.model.eval()  # LoRA dropout off: score as the sequence classifier does at inference
        with use_adapter(self.model, self.name):
            out = self.model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                             output_hidden_states=True, logits_to_keep=1, use_cache=False)  # fmt: skip
        self.model.train(training)
        hidden = out.hidden_states[-1]  # (batch, seq, hidden), after the final norm
        last = pooled_index(input_ids, self.pad_token_id)
        return self.head(hidden[torch.arange(len(last), device=hidden.device), last]).squeeze(-1).float()


# ---- llm-tuning rm score ---------------------------------------------------------------------


@dataclass
class ScoreConfig(ModelOptions):
    """Score rows with a reward model: preference pairs (accuracy) or prompt + response rows."""

    adapter: str | None = option(
        None, "the reward model folder written by `llm-tuning rm`", aliases=("reward_model",)
    )
    data: str | None = option(None, "JSON/JSONL/CSV rows: {prompt, chosen, rejected} or {prompt, response}")
    output_file: str | None = option(None, "where the scores go (default: DATA_scores.jsonl beside the data)")
    prompt_key: str = option("prompt", "field holding the prompt (or `messages` for chat rows)")
    response_key: str = option(
        "response", "field holding the reply to score, for rows without chosen/rejected"
    )
    template: str = option("chat", "chat: the model's chat template; none: raw text")
    system_prompt: str | None = option(
        None, "system message for the chat template (default: the template's own)"
    )
    batch_size: int = option(8, "sequences per forward pass")

    def __post_init__(self) -> None:
        validate_groups(self)
        if not self.adapter or not self.data:
            raise ConfigError("give --adapter REWARD_MODEL_DIR and --data FILE")
        check_output_path("output_file", self.output_file)
        check_positive("batch_size", self.batch_size)
        check_choice("template", self.template, ("chat", "none"))


@dataclass
class ScoreResult:
    output_file: Path
    rows: int
    accuracy: float | None

    def summary(self) -> str:
        acc = f"; pairwise accuracy {self.accuracy:.1%}" if self.accuracy is not None else ""
        return f"scored {self.rows} rows into {self.output_file}{acc}"


def check_reward_adapter(path: str, flag: str) -> None:
    """A reward model folder: a whole adapter (models.adapter_check) saved by `llm-tuning rm` with its score head."""
    files = check_adapter_folder(path, flag)
    heads = files.config.get("modules_to_save") or []
    if files.config.get("task_type") != "SEQ_CLS" or not any(h in heads for h in HEAD_NAMES):
        raise ConfigError(f"{flag} {path} is not a reward model (task {files.config.get('task_type')!r}, no score "
                          "head): pass a folder written by `llm-tuning rm`")  # fmt: skip


def load_reward_model(cfg: ScoreConfig, pad_token_id: int) -> Any:
    from peft import PeftModel

    base = seqcls_model(cfg.model, cfg.dtype, cfg.device, cfg.trust_remote_code, pad_token_id)
    check_adapter_fits(base, cfg.adapter, "--adapter")
    return PeftModel.from_pretrained(base, cfg.adapter).eval()


def run_score(cfg: ScoreConfig) -> ScoreResult:
    """Score every row; pairs also get `correct` (chosen scored higher) and an overall accuracy."""
    rows = list(iter_rows(cfg.data))
    if not rows:
        raise DataError(
            cfg.data, None, "has no rows", hint="add {prompt, chosen, rejected} or {prompt, response} rows"
        )
    pairs, prompts = None, None
    if "chosen" in rows[0][1]:  # every row is checked before the model loads
        pairs = [preference_from_row(row, cfg.data, n, cfg.prompt_key) for n, row in rows]
    else:
        prompts = read_prompts(cfg.data, cfg.prompt_key)
        missing = next((p for p in prompts if not isinstance(p.fields.get(cfg.response_key), str)), None)
        if missing is not None:
            raise DataError(cfg.data, missing.row, "is missing", cfg.response_key,
                            "rows need chosen/rejected, or a prompt and --response_key naming the reply")  # fmt: skip
    check_reward_adapter(cfg.adapter, "--adapter")
    tokenizer = load_tokenizer(cfg.model, cfg.trust_remote_code)
    model = load_reward_model(cfg, tokenizer.pad_token_id)
    out_path = Path(cfg.output_file or Path(cfg.data).with_name(Path(cfg.data).stem + "_scores.jsonl"))
    if pairs is not None:
        encoded = encode_pairs(tokenizer, pairs, cfg.template, cfg.system_prompt, None, cfg.data)
        chosen, rejected = pair_scores(model, encoded, tokenizer.pad_token_id, cfg.batch_size)
        out = [{"row": p.row, "chosen_score": c, "rejected_score": r, "correct": c > r}
               for p, c, r in zip(pairs, chosen.tolist(), rejected.tolist(), strict=True)]  # fmt: skip
        accuracy = pairwise_accuracy(chosen, rejected).item()
    else:
        seqs = [encode_reply(tokenizer, render_prompt(tokenizer, p.prompt, cfg.template, cfg.system_prompt),
                             p.fields[cfg.response_key]) for p in prompts]  # fmt: skip
        scores = score_sequences(model, seqs, tokenizer.pad_token_id, cfg.batch_size)
        out = [{"row": p.row, "score": s} for p, s in zip(prompts, scores.tolist(), strict=True)]
        accuracy = None
    write_jsonl(out, out_path)
    return ScoreResult(out_path, len(out), accuracy)
