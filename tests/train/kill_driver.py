"""Run `llm-tuning ARGS...` and SIGKILL it at a chosen point (for test_kill_resume.py).

    python kill_driver.py POINT STARTED_FILE train --model ... --output_dir ...

POINT: none (no kill of its own: the test may kill it from outside after STARTED_FILE appears), tokenize
(the tokenized set written, its manifest not yet), checkpoint_files (a checkpoint's model and optimizer
written, not its RNG and trainer state), checkpoint_marker (every file written, the marker not yet
renamed), adapter_staged (the new adapter written in full beside output_dir, not swapped in),
adapter_swapped (swapped in, the other entries not yet moved back), report (adapter installed, the
training log not written). Each training step sleeps 50 ms so that a kill from outside lands in training.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path


def die(*args, **kwargs) -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def then_die(function):
    def wrapper(*args, **kwargs):
        function(*args, **kwargs)
        die()

    return wrapper


def arm(point: str) -> None:
    from datasets import Dataset
    from transformers import Trainer

    import llm_tuning.train.sft as sft
    from llm_tuning import checkpoints, files

    if point == "tokenize":
        Dataset.save_to_disk = then_die(Dataset.save_to_disk)
    elif point == "checkpoint_files":
        Trainer._save_optimizer_and_scheduler = then_die(Trainer._save_optimizer_and_scheduler)
    elif point == "checkpoint_marker":
        checkpoints.CheckpointMarks.on_save = die
    elif point == "adapter_staged":
        sft.install_files = die
    elif point == "adapter_swapped":
        files.exchange = then_die(files.exchange)
    elif point == "report":
        sft.write_training_report = die
    elif point != "none":
        raise SystemExit(f"unknown kill point {point}")


def main() -> int:
    point, started, *args = sys.argv[1:]
    from llm_tuning.cli import main as cli
    from llm_tuning.reporting import LogCollector

    def on_train_begin(self, *a, **k):
        Path(started).touch()

    LogCollector.on_train_begin = on_train_begin
    LogCollector.on_step_end = lambda self, *a, **k: time.sleep(0.05)
    arm(point)
    return cli(args)


if __name__ == "__main__":
    sys.exit(main())
