"""`llm-tuning train` under torchrun: 2 CPU processes (gloo DDP) on the tiny model.

The run finishes; it tokenizes once (rank 0, the other rank reuses the cache); both ranks log the same
losses and end with the same adapter weights; the adapter folder has the single-process layout; and the
losses equal a 1-process run at the same global batch (2 x 2 rows against 1 x 4) within 1e-4 relative
(the ranks sum their gradients in another order than one process does).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import llm_tuning.train.sft as sft
from llm_tuning.train.sft import TrainConfig

RTOL = 1e-4

# Runs `llm_tuning.cli.main` as `torchrun -m llm_tuning.cli` would, recording per rank: every logged
# record, whether this rank tokenized, and a checksum of its LoRA weights at the end.
DRIVER = textwrap.dedent("""
    import json, os, sys
    from pathlib import Path
    from transformers import TrainerCallback
    import llm_tuning.data.tokenize as tokenize
    import llm_tuning.train.sft as sft
    from llm_tuning import cli

    rank = os.environ["RANK"]
    record = Path(sys.argv[1]) / f"rank{rank}.jsonl"

    def write(kind, value):
        with record.open("a") as f:
            f.write(json.dumps({"kind": kind, "value": value}) + "\\n")

    class RankLog(TrainerCallback):
        def on_log(self, args, state, control, logs=None, **kwargs):
            write("log", {"step": state.global_step, **(logs or {})})

        def on_train_end(self, args, state, control, model=None, **kwargs):
            write("lora_sum", sum(float(p.double().abs().sum()) for p in model.parameters() if p.requires_grad))

    encode_file = tokenize.encode_file
    def counting_encode_file(*args, **kwargs):
        write("tokenized", True)
        return encode_file(*args, **kwargs)
    tokenize.encode_file = counting_encode_file

    run = sft.run
    sft.run = lambda cfg: run(cfg, callbacks=[RankLog()])
    sys.exit(cli.main(sys.argv[2:]))
""")


def varied_rows() -> list[dict]:
    return [
        {"q": "What is " + " + ".join(["3"] * n) + "?", "a": f"{3 * n}"} for n in (1, 7, 2, 11, 4, 5, 9, 3)
    ]


def flags(model: str, data: Path, out: Path, batch: int) -> dict:
    return dict(model=model, data=str(data), prompt_key="q", target_key="a", output_dir=str(out), max_steps=3,
                per_device_train_batch_size=batch, learning_rate=1e-2, lr_scheduler_type="constant", warmup_steps=0,
                lora_dropout=0.0, logging_steps=1, save_steps=1000, report_to="none", device="cpu")  # fmt: skip


def as_argv(values: dict) -> list[str]:
    return [f"--{k}={v}" for k, v in values.items()]


def read_records(path: Path) -> dict[str, list]:
    records: dict[str, list] = {"log": [], "tokenized": [], "lora_sum": []}
    for line in path.read_text().splitlines():
        item = json.loads(line)
        records[item["kind"]].append(item["value"])
    return records


@pytest.fixture(scope="module")
def data_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("ddp-data") / "rows.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in varied_rows()), encoding="utf-8")
    return path


def test_torchrun_two_processes_match_one(tiny_model, data_file, tmp_path):
    records = tmp_path / "records"
    records.mkdir()
    driver = tmp_path / "driver.py"
    driver.write_text(DRIVER, encoding="utf-8")
    two = tmp_path / "two"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", str(driver),
           str(records), "train", *as_argv(flags(tiny_model, data_file, two, batch=2))]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]

    ranks = [read_records(records / f"rank{r}.jsonl") for r in (0, 1)]
    assert [len(r["tokenized"]) for r in ranks] == [1, 0]  # rank 0 tokenized; rank 1 reused its cache
    losses = [[rec["loss"] for rec in r["log"] if "loss" in rec] for r in ranks]
    assert len(losses[0]) == 3 and losses[0] == losses[1]  # both ranks log the same (gathered) losses
    assert ranks[0]["lora_sum"] == ranks[1]["lora_sum"]  # DDP kept the replicas identical

    one = tmp_path / "one"
    reference = sft.run(TrainConfig(**flags(tiny_model, data_file, one, batch=4)))
    assert losses[0] == pytest.approx([r["loss"] for r in reference.log if "loss" in r], rel=RTOL)
    names = lambda folder: sorted(p.name for p in folder.iterdir() if not p.name.startswith("checkpoint-"))  # noqa: E731
    assert names(two) == names(one)
    a, b = (
        load_file(str(two / "adapter_model.safetensors")),
        load_file(str(one / "adapter_model.safetensors")),
    )
    assert a.keys() == b.keys()
    for key in a:
        assert torch.allclose(a[key], b[key], rtol=RTOL, atol=1e-6), key
    log = json.loads((two / "training_log.json").read_text())
    assert log["summary"]["steps"] == 3
    assert log["summary"]["input_tokens"] == reference.trained_tokens  # counted over both ranks


def test_python_dash_m_cli_runs():
    proc = subprocess.run([sys.executable, "-m", "llm_tuning.cli", "--help"], capture_output=True, text=True)
    assert proc.returncode == 0 and "train" in proc.stdout
