"""Board jobs are real `llm-tuning` subprocesses: they finish, fail with the CLI's line, stop with a checkpoint,
resume, and are found again by a new app on the same folder (a reload or a board restart)."""

from __future__ import annotations

import json
import os
import signal
import time

import pytest
from board_support import client, wait_job

from llm_tuning.board.jobs import JobManager
from llm_tuning.board.progress import parse_progress, parse_records, tail

TRAIN = {
    "model": "tiny",
    "data": ["data/train.jsonl"],
    "prompt_key": "q",
    "target_key": "a",
    "logging_steps": "1",
}

LOG = ("  0%|          | 0/6 [00:00<?, ?it/s]\r\n{'loss': '6.041', 'learning_rate': '0', 'epoch': '0.2'}\n"
       " 17%|█▋        | 1/6 [00:00<00:00, 13.27it/s]\r 33%|███▎      | 2/6 [00:03<00:12, 19.01it/s]\n"
       "{'loss': '6.026', 'grad_norm': 'nan', 'learning_rate': '0.0002', 'epoch': '0.4'}\n"
       "{'train_runtime': '0.4665', 'train_loss': '6.022'}\nadapter saved\n")  # fmt: skip


def test_progress_and_records_from_a_trainer_log():
    assert parse_progress(LOG) == {"step": 2, "total": 6, "elapsed_s": 3.0, "eta_s": 12.0}
    records = parse_records(LOG, logging_steps=1)
    assert [(r["step"], r["loss"]) for r in records] == [(1, 6.041), (2, 6.026)]
    assert "grad_norm" not in records[1] and records[1]["learning_rate"] == 0.0002
    assert tail(LOG, 4).splitlines()[0].startswith(" 33%")  # a redrawn bar shows its last state
    assert parse_records("{'loss': __import__('os').system('x')}\n") == []  # a literal only, never run


def test_bad_flags_fail_with_the_cli_line(workdir):
    manager = JobManager(workdir)
    job_id = manager.start("train", ["--data", "data/missing.jsonl", "--model", "tiny"], output_dir="w/x")
    status = wait_job(manager, job_id)
    assert status["status"] == "failed" and status["rc"] == 2
    assert "llm-tuning train: error: data/missing.jsonl" in status["log_tail"]
    assert "Traceback" not in status["log_tail"] and not status["adapter"]


@pytest.mark.slow
def test_train_job_finishes_and_a_new_app_reattaches(workdir):
    api = client(workdir)
    job_id = api.post(
        "/api/jobs", json={"command": "train", "values": {**TRAIN, "max_steps": "3", "output_dir": "w/a"}}
    ).json()["id"]
    status = wait_job(JobManager(workdir), job_id)
    assert status["status"] == "done", status["log_tail"]
    assert [r["step"] for r in status["records"]] == [1, 2, 3] and status["adapter"]
    assert (workdir / "w/a/adapter_config.json").is_file() and status["final_loss"] > 0
    listed = client(workdir).get("/api/jobs").json()["jobs"]  # a new app: the job is where it was
    assert [(j["id"], j["status"]) for j in listed] == [(job_id, "done")]


@pytest.mark.slow
def test_stop_saves_a_checkpoint_and_resume_continues(workdir):
    api = client(workdir)
    values = {**TRAIN, "max_steps": "100000", "save_steps": "100000", "output_dir": "w/long"}
    job_id = api.post("/api/jobs", json={"command": "train", "values": values}).json()["id"]
    manager = JobManager(workdir)
    deadline = time.monotonic() + 120
    while len(manager.status(job_id)["records"]) < 5:
        assert time.monotonic() < deadline and manager.status(job_id)["status"] == "running"
        time.sleep(0.2)
    reattached = client(workdir)  # a reload / restarted board sees it running and can stop it
    assert reattached.get(f"/api/jobs/{job_id}").json()["status"] == "running"
    assert reattached.post(f"/api/jobs/{job_id}/stop", json={}).json()["result"] == "stopping"
    stopped = wait_job(manager, job_id)
    assert stopped["status"] == "stopped" and stopped["rc"] == 0, stopped["log_tail"]
    checkpoints = sorted((workdir / "w/long").glob("checkpoint-*"))
    assert len(checkpoints) == 1 and (checkpoints[0] / "llm_tuning_checkpoint.json").is_file()
    step = int(checkpoints[0].name.split("-")[1])
    assert step >= 5 and (workdir / "w/long/adapter_config.json").is_file()
    resumed = reattached.post(f"/api/jobs/{job_id}/resume", json={}).json()["id"]
    while manager.status(resumed)["status"] == "running" and len(manager.status(resumed)["records"]) < 3:
        time.sleep(0.2)
    manager.stop(resumed)
    final = wait_job(manager, resumed)
    assert final["status"] == "stopped", final["log_tail"]
    assert final["records"][-1]["step"] > step  # it went on from the checkpoint
    log = json.loads((workdir / "w/long/training_log.json").read_text())["log"]
    assert [r["step"] for r in log if "loss" in r][:step] == list(
        range(1, step + 1)
    )  # the steps before it kept


@pytest.mark.slow
def test_a_killed_job_shows_as_lost(workdir):
    manager = JobManager(workdir)
    job_id = manager.start("train", ["--model", "tiny", "--data", "data/train.jsonl", "--prompt_key", "q", "--target_key",
                                     "a", "--max_steps", "100000", "--output_dir", "w/k"])  # fmt: skip
    time.sleep(1)
    pid = json.loads((workdir / ".board/jobs" / job_id / "pid.json").read_text())["pid"]
    os.killpg(pid, signal.SIGKILL)
    assert wait_job(JobManager(workdir), job_id)["status"] == "lost"
