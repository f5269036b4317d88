"""SIGTERM during training asks for a checkpoint and a normal end after the current step (train/stop.py)."""

from __future__ import annotations

import os
import signal
from types import SimpleNamespace

from transformers import TrainerControl

from llm_tuning.train.stop import StopOnSigterm


def test_sigterm_sets_save_and_stop_then_the_handler_is_restored():
    before = signal.getsignal(signal.SIGTERM)
    stop, control, state = StopOnSigterm(), TrainerControl(), SimpleNamespace(global_step=7)
    stop.on_train_begin(None, state, control)
    stop.on_step_end(None, state, control)
    assert not (control.should_save or control.should_training_stop)
    os.kill(os.getpid(), signal.SIGTERM)  # handled: the test process goes on
    stop.on_step_end(None, state, control)
    assert stop.requested and control.should_save and control.should_training_stop
    stop.on_train_end(None, state, control)
    assert signal.getsignal(signal.SIGTERM) == before
