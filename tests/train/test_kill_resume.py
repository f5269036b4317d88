"""Kill `train` (SIGKILL) at scripted and at random points, resume each time: the final adapter equals an
uninterrupted run's bit for bit, the log and train_loss too, and nothing half-written is ever taken as
complete (issue 11).

The scripted points cover tokenizing, a checkpoint's files, its completion marker, the adapter staged
and swapped in, and the report; the random kills (seeded delays after training starts) land anywhere.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from llm_tuning.checkpoints import is_complete, list_checkpoints
from llm_tuning.data.tokenize import read_manifest

HERE = Path(__file__).resolve().parent
SRC = HERE.parents[1] / "src"
SCRIPTED = [
    "tokenize",
    "checkpoint_files",
    "checkpoint_marker",
    "adapter_staged",
    "adapter_swapped",
    "report",
]
RANDOM_KILLS = 6


def train_args(model: str, data: Path, out: Path, resume: bool) -> list[str]:
    return ["train", "--model", model, "--data", str(data), "--prompt_key", "q", "--target_key", "a",
            "--output_dir", str(out), "--max_steps", "40", "--save_steps", "4", "--save_total_limit", "2",
            "--per_device_train_batch_size", "2", "--learning_rate", "1e-2", "--lr_scheduler_type", "constant",
            "--warmup_steps", "0", "--lora_rank", "4", "--lora_dropout", "0.1", "--logging_steps", "1",
            "--report_to", "none", "--device", "cpu", "--torch_threads", "1",
            *(["--resume_from_checkpoint", "latest"] if resume else [])]  # fmt: skip


def launch(point: str, args: list[str], home: Path, started: Path) -> subprocess.Popen:
    started.unlink(missing_ok=True)
    env = {**os.environ, "PYTHONPATH": str(SRC), "LLM_TUNING_HOME": str(home), "OMP_NUM_THREADS": "1",
           "HF_HUB_OFFLINE": "1"}  # fmt: skip
    return subprocess.Popen([sys.executable, str(HERE / "kill_driver.py"), point, str(started), *args], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)  # fmt: skip


def has_complete(out: Path) -> bool:
    return any(is_complete(c) for c in list_checkpoints(out))


def check_nothing_half_taken(out: Path, home: Path) -> int:
    """Whatever a kill left: the adapter is whole or absent, every checkpoint taken as complete loads, every
    tokenized set with a manifest is whole. Returns how many complete checkpoints were checked."""
    if (out / "adapter_config.json").exists() or (out / "adapter_model.safetensors").exists():
        rank = json.loads((out / "adapter_config.json").read_text())["r"]
        weights = load_file(str(out / "adapter_model.safetensors"))
        assert {t.shape[0] for k, t in weights.items() if "lora_A" in k} == {rank}
    complete = [c for c in list_checkpoints(out) if is_complete(c)]
    for folder in complete:
        load_file(str(folder / "adapter_model.safetensors"))
        for name in ("optimizer.pt", "scheduler.pt"):
            torch.load(folder / name, weights_only=True)
        assert (folder / "rng_state.pth").stat().st_size > 0  # numpy inside: the Trainer allowlists it
        assert json.loads((folder / "trainer_state.json").read_text())["global_step"] == int(folder.name[11:])
    for folder in (home / "datasets").glob("*") if (home / "datasets").is_dir() else []:
        manifest = read_manifest(folder)
        if manifest is not None:
            from datasets import load_from_disk

            assert len(load_from_disk(str(folder))) == manifest["counts"]["rows"]
    return len(complete)


@pytest.mark.slow  # ~15 training processes: about 3 minutes on 2 busy cores
def test_killed_and_resumed_training_equals_the_uninterrupted_run(tiny_model, tmp_path):
    rows = [{"q": f"What is {a} + 1?", "a": f"{a} + 1 = {a + 1}"} for a in range(8)]
    data = tmp_path / "rows.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    home, started, out, ref = tmp_path / "home", tmp_path / "started", tmp_path / "out", tmp_path / "ref"
    proc = launch("none", train_args(tiny_model, data, ref, False), tmp_path / "ref-home", started)
    assert proc.wait() == 0, proc.stderr.read()

    rng = random.Random(11)
    points = SCRIPTED[:3] + ["random"] * RANDOM_KILLS + SCRIPTED[3:] + ["none"]
    counts = {"kills": 0, "resumes": 0, "complete_checkpoints_checked": 0, "finished_before_kill": 0}
    for point in points:
        resume = has_complete(out)
        counts["resumes"] += resume
        proc = launch("none" if point == "random" else point, train_args(tiny_model, data, out, resume), home,
                      started)  # fmt: skip
        if point == "random":
            while not started.exists() and proc.poll() is None:
                time.sleep(0.02)
            time.sleep(rng.uniform(0.0, 2.5))  # 40 steps of >= 50 ms: anywhere in training or its saves
            proc.send_signal(signal.SIGKILL)
        code = proc.wait()
        if point == "none" or (point == "random" and code == 0):
            assert code == 0, proc.stderr.read()
            counts["finished_before_kill"] += point == "random"
            if point == "random":
                continue
        else:
            assert code == -signal.SIGKILL, f"{point}: exit {code}\n{proc.stderr.read()[-3000:]}"
            counts["kills"] += 1
        counts["complete_checkpoints_checked"] += check_nothing_half_taken(out, home)

    a, b = (load_file(str(d / "adapter_model.safetensors")) for d in (ref, out))
    equal = a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    logs = [json.loads((d / "training_log.json").read_text()) for d in (ref, out)]
    losses = [[(r["step"], r["loss"]) for r in log["log"] if "loss" in r] for log in logs]
    print("kill-and-resume:", json.dumps({**counts, "adapter_bit_equal": equal}))
    assert equal, max((a[k] - b[k]).abs().max().item() for k in a)
    assert losses[0] == losses[1] and len(losses[0]) == 40
    assert logs[1]["summary"]["train_loss"] == pytest.approx(logs[0]["summary"]["train_loss"], rel=1e-9)
    assert counts["kills"] >= len(SCRIPTED)
    assert not list(tmp_path.glob(".out*"))  # nothing left beside the output folder
    assert not list((home / "datasets").glob(".*.partial"))  # the killed tokenize's temp folder was cleared
