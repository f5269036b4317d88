"""Helpers for the tests that run `llm-tuning train` as several processes (torchrun / accelerate launch on CPU).

DRIVER runs `llm_tuning.cli.main` as `torchrun -m llm_tuning.cli` would, recording per rank (rank{R}.jsonl
in a records folder): every logged record, whether this rank tokenized, the levers `train` chose, and at
the end a checksum of its LoRA weights (its own shard under FSDP) and their global and local sizes. With
KILL_RANK_AT_STEP=R:S in its environment, rank R SIGKILLs itself as step S+1 begins.
"""

from __future__ import annotations

import json
import socket
import sys
import textwrap
from pathlib import Path

DRIVER = textwrap.dedent("""
    import json, os, sys
    from pathlib import Path
    from transformers import TrainerCallback
    import llm_tuning.data.tokenize as tokenize
    import llm_tuning.train.sft as sft
    from llm_tuning import cli

    rank = os.environ["RANK"]
    record = Path(sys.argv[1]) / f"rank{rank}.jsonl"
    kill_rank, _, kill_step = os.environ.get("KILL_RANK_AT_STEP", "-1:-1").partition(":")

    def write(kind, value):
        with record.open("a") as f:
            f.write(json.dumps({"kind": kind, "value": value}) + "\\n")

    class RankLog(TrainerCallback):
        def on_log(self, args, state, control, logs=None, **kwargs):
            write("log", {"step": state.global_step, **(logs or {})})

        def on_step_begin(self, args, state, control, **kwargs):
            if rank == kill_rank and state.global_step == int(kill_step):
                os.kill(os.getpid(), 9)  # SIGKILL: no handler, no cleanup, mid-run

        def on_train_end(self, args, state, control, model=None, **kwargs):
            params = [p for p in model.parameters() if p.requires_grad]
            local = [p.to_local() if hasattr(p, "to_local") else p for p in params]  # FSDP2: DTensor shards
            write("lora_sum", sum(float(t.double().abs().sum()) for t in local))
            write("numel", [sum(p.numel() for p in params), sum(t.numel() for t in local)])
            write("wrapper", type(model).__name__)

    encode_file = tokenize.encode_file
    def counting_encode_file(*args, **kwargs):
        write("tokenized", True)
        return encode_file(*args, **kwargs)
    tokenize.encode_file = counting_encode_file

    check_levers = sft.check_levers
    def recording_check_levers(*args, **kwargs):
        levers = check_levers(*args, **kwargs)
        write("levers", [levers.packing, levers.lean_logits, levers.lean_mlp])
        return levers
    sft.check_levers = recording_check_levers

    run = sft.run
    sft.run = lambda cfg: run(cfg, callbacks=[RankLog()])
    sys.exit(cli.main(sys.argv[2:]))
""")


def varied_rows() -> list[dict]:
    return [
        {"q": "What is " + " + ".join(["3"] * n) + "?", "a": f"{3 * n}"} for n in (1, 7, 2, 11, 4, 5, 9, 3)
    ]


def flags(model: str, data: Path, out: Path, batch: int, steps: int = 3) -> dict:
    return dict(model=model, data=str(data), prompt_key="q", target_key="a", output_dir=str(out),
                max_steps=steps, per_device_train_batch_size=batch, learning_rate=1e-2,
                lr_scheduler_type="constant", warmup_steps=0, lora_dropout=0.0, logging_steps=1, save_steps=1000,
                report_to="none", device="cpu")  # fmt: skip


def as_argv(values: dict) -> list[str]:
    return [f"--{k}={v}" for k, v in values.items()]


def read_records(path: Path) -> dict[str, list]:
    records: dict[str, list] = {"log": [], "tokenized": [], "lora_sum": [], "numel": [], "wrapper": [],
                                "levers": []}  # fmt: skip
    for line in path.read_text().splitlines():
        item = json.loads(line)
        records[item["kind"]].append(item["value"])
    return records


def losses(records: dict[str, list]) -> list[float]:
    return [rec["loss"] for rec in records["log"] if "loss" in rec]


def write_driver(folder: Path) -> tuple[Path, Path]:
    """(driver script, empty records folder) under `folder`."""
    records = folder / "records"
    records.mkdir()
    driver = folder / "driver.py"
    driver.write_text(DRIVER, encoding="utf-8")
    return driver, records


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def torchrun(*args: str) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", *args]


def adapter_names(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if not p.name.startswith("checkpoint-"))
