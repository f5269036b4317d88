"""A sharded run survives a killed rank: FSDP2 on 2 CPU processes (accelerate launch, fsdp_cpu.yaml) saves
checkpoints every 2 steps; rank 1 is SIGKILLed as step 6 of 8 begins; both ranks are started again with
`--resume_from_checkpoint latest`, resume from checkpoint-4 and finish. The final adapter and the losses
after the restart equal an uninterrupted run's (1 process at the same global batch, 2 x 2 rows against
1 x 4) within 1e-4 relative.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from launch_helpers import as_argv, flags, free_port, losses, read_records, varied_rows, write_driver
from safetensors.torch import load_file

import llm_tuning.train.sft as sft
from llm_tuning.train.sft import TrainConfig

RTOL = 1e-4
FSDP_CPU = Path(__file__).resolve().parents[2] / "configs" / "accelerate" / "fsdp_cpu.yaml"
STEPS, SAVE_EVERY, KILLED_AT = 8, 2, 5


def launch(driver: Path, records: Path, argv: list[str], env: dict) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(FSDP_CPU),
           "--main_process_port", str(free_port()), str(driver), str(records), "train", *argv]  # fmt: skip
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)


@pytest.mark.slow
def test_fsdp_run_killed_mid_run_resumes_to_the_uninterrupted_adapter(tiny_model, tmp_path):
    data = tmp_path / "rows.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in varied_rows()), encoding="utf-8")
    out = tmp_path / "sharded"
    argv = as_argv({**flags(tiny_model, data, out, batch=2, steps=STEPS), "save_steps": SAVE_EVERY})
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}

    driver, records = write_driver(tmp_path)
    killed = launch(driver, records, argv, {**env, "KILL_RANK_AT_STEP": f"1:{KILLED_AT}"})
    assert killed.returncode != 0 and "exitcode  : -9" in killed.stderr, killed.stderr[-3000:]
    assert sorted(p.name for p in out.glob("checkpoint-*")) == ["checkpoint-2", "checkpoint-4"]
    assert not (out / "adapter_model.safetensors").exists()  # the killed run never got to save its adapter
    assert (out / "checkpoint-4" / "pytorch_model_fsdp.bin").is_file()  # FSDP's own checkpoint

    for item in records.iterdir():
        item.unlink()
    resumed = launch(driver, records, [*argv, "--resume_from_checkpoint=latest"], env)
    assert resumed.returncode == 0, resumed.stderr[-4000:]
    ranks = [read_records(records / f"rank{r}.jsonl") for r in (0, 1)]
    assert all(r["wrapper"][0].startswith("FSDP") for r in ranks)

    reference = sft.run(TrainConfig(**flags(tiny_model, data, tmp_path / "one", batch=4, steps=STEPS)))
    expected = [r["loss"] for r in reference.log if "loss" in r]
    assert losses(ranks[0]) == losses(ranks[1])
    assert losses(ranks[0]) == pytest.approx(expected[4:], rel=RTOL)  # steps 5..8, again from checkpoint-4
    a = load_file(str(out / "adapter_model.safetensors"))
    b = load_file(str(tmp_path / "one" / "adapter_model.safetensors"))
    assert a.keys() == b.keys()
    for key in a:
        assert torch.allclose(a[key], b[key], rtol=RTOL, atol=1e-6), key
    assert json.loads((out / "training_log.json").read_text())["summary"]["steps"] == STEPS
