"""Which checkpoints a run may resume from, and which output folders it may write into.

    llm-tuning train ... --output_dir weights/x --resume_from_checkpoint latest
    llm-tuning train ... --output_dir weights/x --overwrite_output_dir     (a new run where another was)

Every run has an identity: a hash of its config (less the flags that only say how to run it, such as
--save_steps or --report_to) and of its data's fingerprints, written to `llm_tuning_run.json` in the
output folder and into each checkpoint. A checkpoint is complete once `llm_tuning_checkpoint.json` is in
it (renamed from `.llm_tuning_writing` when the Trainer has written every file; the Trainer writes
`trainer_state.json` last, so one with that marker and a whole trainer_state.json is complete too).
`latest` takes the newest complete checkpoint of the same run, skipping half-written ones; a checkpoint
of another run is refused, and so is a new run into a folder holding another run's checkpoints unless
--overwrite_output_dir is given (even then only checkpoints that carry our markers are deleted).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import re
import shutil
from pathlib import Path
from typing import Any

from transformers import TrainerCallback

from llm_tuning.config import ConfigError
from llm_tuning.files import finish_install, write_json

logger = logging.getLogger(__name__)

RUN_FILE = "llm_tuning_run.json"
DONE = "llm_tuning_checkpoint.json"
WRITING = ".llm_tuning_writing"
# flags that change how a run is carried out or reported, not what it computes
OPERATIONAL = {"output_dir", "resume_from_checkpoint", "overwrite_output_dir", "report_to", "logging_steps",
               "save_steps", "save_total_limit", "eval_steps", "dataloader_num_workers", "torch_threads",
               "mmap_threshold_mb", "device",
               # data paths: their content is in the data fingerprints (the same file by another path is the same run)
               "data", "eval_data", "tokenized_dataset"}  # fmt: skip


def run_identity(cfg: Any, data: list[str | None]) -> dict[str, Any]:
    """The config (less OPERATIONAL flags) and data fingerprints, with their hash as `id`."""
    config = json.loads(json.dumps(dataclasses.asdict(cfg), default=str))
    config = {k: v for k, v in config.items() if k not in OPERATIONAL}
    body = {"config": config, "data": data}
    return {"id": hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()[:16], **body}


def file_fingerprints(paths: list[str | None]) -> list[str | None]:
    """sha256 of each data file (None for a missing one), for run_identity."""
    out: list[str | None] = []
    for path in paths:
        if path and Path(path).is_file():
            digest = hashlib.sha256()
            with open(path, "rb") as f:
                for block in iter(lambda: f.read(1 << 20), b""):
                    digest.update(block)
            out.append(digest.hexdigest()[:16])
        else:
            out.append(None)
    return out


def begin(cfg: Any, data: list[str | None], collector: Any, main: bool = True) -> CheckpointMarks:
    """Check --output_dir / --resume_from_checkpoint for this run (rank 0 also records it); the marks
    callback for the Trainer, with `checkpoint` (to resume, or None) and the log up to it in `collector`."""
    identity = run_identity(cfg, data)
    resume, overwrite = cfg.resume_from_checkpoint, getattr(cfg, "overwrite_output_dir", False)
    if main:
        checkpoint = prepare_output_dir(cfg.output_dir, identity, resume, overwrite)
    else:
        checkpoint = pick_checkpoint(cfg.output_dir, resume, identity) if resume else None
    collector.records = log_history(checkpoint)  # the steps before the checkpoint stay in the log
    marks = CheckpointMarks(identity, loss_sum(checkpoint))
    marks.checkpoint = checkpoint
    return marks


def checkpoint_step(folder: Path) -> int:
    match = re.fullmatch(r"checkpoint-(\d+)", folder.name)
    return int(match.group(1)) if match else -1


def list_checkpoints(out: str | Path) -> list[Path]:
    """checkpoint-N folders of `out`, oldest step first."""
    found = [p for p in Path(out).glob("checkpoint-*") if p.is_dir() and checkpoint_step(p) >= 0]
    return sorted(found, key=checkpoint_step)


def _read(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    return data if isinstance(data, dict) else None


def marker(folder: Path) -> dict[str, Any] | None:
    """The checkpoint's marker (complete or being written), or None if llm-tuning did not write it."""
    return _read(folder / DONE) or _read(folder / WRITING)


def _finished(folder: Path) -> bool:
    """Whether an unmarked folder holds a whole checkpoint (the Trainer's or the RL loop's last file)."""
    return any(_read(folder / name) is not None for name in ("trainer_state.json", "loop_state.json"))


def is_complete(folder: Path) -> bool:
    if (folder / DONE).is_file():
        return _read(folder / DONE) is not None
    state = _read(folder / "trainer_state.json")  # written last by the Trainer: the files before it are whole
    return (
        (folder / WRITING).is_file()
        and state is not None
        and state.get("global_step") == checkpoint_step(folder)
    )


def _differences(saved: dict[str, Any], identity: dict[str, Any]) -> str:
    old, new = saved.get("identity", {}).get("config", {}), identity["config"]
    keys = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
    if saved.get("identity", {}).get("data") != identity["data"]:
        keys.append("data")
    return ", ".join(f"--{k}" if k != "data" else "the data" for k in keys) or "its config"


def pick_checkpoint(out: str | Path, value: str, identity: dict[str, Any]) -> Path:
    """The checkpoint to resume: `value` itself, or for 'latest' the newest complete one of this run."""
    candidates = list(reversed(list_checkpoints(out))) if value == "latest" else [Path(value)]
    if value != "latest" and not Path(value).is_dir():
        raise ConfigError(
            f"--resume_from_checkpoint {value}: no such folder; pass a checkpoint-N folder or 'latest'"
        )
    for folder in candidates:
        saved = marker(folder)
        if saved is None and value == "latest" and not _finished(folder):
            logger.warning("skipping %s: incomplete (killed as it was created)", folder)
            continue
        if saved is None:
            raise ConfigError(f"--resume_from_checkpoint: {folder} was not written by llm-tuning (no {DONE}); "
                              "resume only checkpoints of this tool")  # fmt: skip
        if not is_complete(folder):
            if value != "latest":
                raise ConfigError(f"--resume_from_checkpoint: {folder} is incomplete (its save was interrupted); "
                                  "pass an earlier checkpoint or 'latest'")  # fmt: skip
            logger.warning("skipping %s: incomplete (its save was interrupted)", folder)
            continue
        if saved.get("run") != identity["id"]:
            raise ConfigError(f"--resume_from_checkpoint: {folder} belongs to another run (it differs in "
                              f"{_differences(saved, identity)}); resume with the same flags and data, or start "
                              "a new run in another --output_dir")  # fmt: skip
        logger.info("resuming from %s", folder)
        return folder
    raise ConfigError(f"--resume_from_checkpoint latest: no complete checkpoint-N folder in {out}")


def prepare_output_dir(
    out: str | Path, identity: dict[str, Any], resume: str | None, overwrite: bool
) -> Path | None:
    """Check `out` for this run (see the module docstring); record the run; the checkpoint to resume, if any."""
    out = Path(out)
    finish_install(out)  # entries a killed adapter save left beside the folder go back first
    checkpoint = pick_checkpoint(out, resume, identity) if resume else None
    foreign = [
        c
        for c in list_checkpoints(out)
        if (marker(c) or {}).get("run") != identity["id"] and any(c.iterdir())
    ]
    if foreign and not resume:
        if not overwrite:
            raise ConfigError(f"--output_dir {out} holds checkpoints of another run ({foreign[-1].name}); "
                              "choose another --output_dir, resume that run with its own flags, or pass "
                              "--overwrite_output_dir to start a new one there (deleting those checkpoints)")  # fmt: skip
        unknown = [c for c in foreign if marker(c) is None]
        if unknown:
            raise ConfigError(f"{unknown[0]} was not written by llm-tuning: not deleting it, even with "
                              "--overwrite_output_dir; move it out of the way or choose another --output_dir")  # fmt: skip
        for folder in foreign:
            logger.info("--overwrite_output_dir: deleting %s (another run's checkpoint)", folder)
            shutil.rmtree(folder)
    write_json(out / RUN_FILE, identity)
    return checkpoint


def loss_sum(checkpoint: Path | None) -> float:
    """The sum of the per-step losses up to `checkpoint` (0 for a new run)."""
    return float((marker(checkpoint) or {}).get("loss_sum", 0.0)) if checkpoint else 0.0


def log_history(checkpoint: Path | None) -> list[dict[str, Any]]:
    """The records the Trainer logged up to `checkpoint`, as LogCollector keeps them."""
    if checkpoint is None:
        return []
    state = _read(checkpoint / "trainer_state.json") or {}
    return [
        {"step": r["step"], **{k: v for k, v in r.items() if k != "step"}}
        for r in state.get("log_history", [])
    ]


class CheckpointMarks(TrainerCallback):
    """Marks each checkpoint the Trainer writes: `.llm_tuning_writing` before, renamed to complete after.

    `trainer` is set after the Trainer is built; `offset` is the loss sum of the steps before a resume.
    """

    def __init__(self, identity: dict[str, Any], offset: float = 0.0) -> None:
        self.identity, self.offset, self.trainer = identity, offset, None
        self.checkpoint: Path | None = None

    def _folder(self, args: Any, state: Any) -> Path:
        return Path(args.output_dir) / f"checkpoint-{state.global_step}"

    def _before(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if not (control.should_save and state.is_world_process_zero):
            return
        folder = self._folder(args, state)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / DONE).unlink(missing_ok=True)  # a same-run checkpoint rewritten in place: not complete now
        write_json(folder / WRITING, {"run": self.identity["id"], "step": state.global_step,
                                      "loss_sum": self.total_loss(), "identity": self.identity})  # fmt: skip

    on_step_end = _before
    on_epoch_end = _before

    def on_save(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        folder = self._folder(args, state)
        if state.is_world_process_zero and (folder / WRITING).is_file():
            os.replace(folder / WRITING, folder / DONE)

    def resume_argument(self) -> str | None:
        return str(self.checkpoint) if self.checkpoint else None

    def finish(self, output: Any, records: list[dict[str, Any]]) -> Any:
        """`output` with the mean loss over every step, as an uninterrupted run reports it (the Trainer's
        covers only the steps since the resume); the log's final record gets it too."""
        if not self.offset:
            return output
        loss = (self.offset + self.trainer._total_loss_scalar) / max(output.global_step, 1)
        for record in records[-1:]:
            if "train_loss" in record:
                record["train_loss"] = loss
        return output._replace(training_loss=loss)

    def total_loss(self) -> float:
        """Sum of every step's loss so far, across resumes (the Trainer's own sum restarts at a resume)."""
        trainer = self.trainer
        if trainer is None:
            return self.offset
        pending = getattr(trainer, "_tr_loss", None)
        pending = pending.item() if hasattr(pending, "item") else float(pending or 0.0)
        return self.offset + getattr(trainer, "_total_loss_scalar", 0.0) + pending
