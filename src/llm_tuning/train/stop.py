"""SIGTERM stops a training run cleanly: a checkpoint at the current step, then the adapter, as at the end.

    kill -TERM PID          (the board's Stop button sends it; Ctrl-C / SIGINT still stops at once)

The signal only sets a flag; the Trainer checks it after the current step, saves a checkpoint there
(resumable with --resume_from_checkpoint latest) and ends the run the normal way, so the adapter,
training_log.json and the curves are written for the steps done. Outside training (loading, tokenizing)
SIGTERM keeps its default meaning: the process ends.
"""

from __future__ import annotations

import logging
import signal
import threading
from typing import Any

from transformers import TrainerCallback

logger = logging.getLogger(__name__)


class StopOnSigterm(TrainerCallback):
    def __init__(self) -> None:
        self.requested = False
        self.previous: Any = None

    def _handle(self, signum: int, frame: Any) -> None:
        self.requested = True
        logger.warning("stop requested (SIGTERM): saving a checkpoint after this step, then the adapter")

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if threading.current_thread() is threading.main_thread():  # signal handlers live on the main thread
            self.previous = signal.signal(signal.SIGTERM, self._handle)

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if self.requested:
            control.should_save = True
            control.should_training_stop = True

    def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if self.previous is not None:
            signal.signal(signal.SIGTERM, self.previous)
            self.previous = None
        if self.requested:
            logger.warning("stopped at step %d by request; resume with --resume_from_checkpoint latest",
                           state.global_step)  # fmt: skip
