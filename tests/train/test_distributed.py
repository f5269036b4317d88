"""`llm-tuning train` as 2 CPU processes (gloo), five ways: torchrun DDP; FSDP2 and DeepSpeed ZeRO-2 / ZeRO-3
through `accelerate launch` with configs/accelerate/{fsdp,deepspeed_zero2,deepspeed_zero3}_cpu.yaml; and two
"nodes" of one process each (torchrun --nnodes 2, c10d rendezvous on 127.0.0.1).

Each run finishes; rank 0 tokenizes and the other rank reuses the cache; both ranks log the same losses;
the adapter folder has the single-process layout and reloads with plain PEFT; and the losses and adapter
weights equal a 1-process run at the same global batch (2 x 2 rows against 1 x 4) within 1e-4 relative
(the ranks sum their gradients in another order than one process does). Padding-free packing, logits only
at trained positions and the lean MLP stay on in every run.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from launch_helpers import (
    adapter_names,
    as_argv,
    flags,
    free_port,
    losses,
    read_records,
    torchrun,
    varied_rows,
    write_driver,
)
from safetensors.torch import load_file

import llm_tuning.train.sft as sft
from llm_tuning.train.sft import TrainConfig

RTOL = 1e-4
CONFIGS = Path(__file__).resolve().parents[2] / "configs" / "accelerate"
FSDP_CPU = CONFIGS / "fsdp_cpu.yaml"


@pytest.fixture(scope="module")
def data_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("ddp-data") / "rows.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in varied_rows()), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def one_process(tiny_model, data_file, tmp_path_factory):
    """(result, output folder) of the 1-process run at batch 4: the reference for every 2-process run."""
    folder = tmp_path_factory.mktemp("one-process")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("LLM_TUNING_HOME", str(folder / "home"))
        result = sft.run(TrainConfig(**flags(tiny_model, data_file, folder / "out", batch=4)))
    return result, folder / "out"


def run_ok(cmd: list[str], timeout: int = 300) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout)
    assert proc.returncode == 0, proc.stderr[-4000:]


def check_matches_one_process(ranks: list[dict], out: Path, one_process, tiny_model) -> None:
    reference, one = one_process
    assert [len(r["tokenized"]) for r in ranks] == [1, 0]  # rank 0 tokenized; rank 1 reused its cache
    assert all(r["levers"] == [[True, True, True]] for r in ranks)  # packing, lean logits, lean MLP
    assert len(losses(ranks[0])) == 3 and losses(ranks[0]) == losses(ranks[1])  # the same gathered losses
    assert losses(ranks[0]) == pytest.approx([r["loss"] for r in reference.log if "loss" in r], rel=RTOL)
    assert adapter_names(out) == adapter_names(one)
    a, b = (
        load_file(str(out / "adapter_model.safetensors")),
        load_file(str(one / "adapter_model.safetensors")),
    )
    assert a.keys() == b.keys()
    for key in a:
        assert torch.allclose(a[key], b[key], rtol=RTOL, atol=1e-6), key
    log = json.loads((out / "training_log.json").read_text())
    assert log["summary"]["steps"] == 3
    assert log["summary"]["input_tokens"] == reference.trained_tokens  # counted over both ranks
    check_plain_peft_reload(tiny_model, out, a)


def check_plain_peft_reload(base: str, adapter: Path, weights: dict) -> None:
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base), str(adapter))
    loaded = {k: v for k, v in model.state_dict().items() if "lora_" in k}
    assert len(loaded) == len(weights)
    for key, value in weights.items():
        assert torch.equal(loaded[key.replace(".weight", ".default.weight")], value), key


@pytest.mark.slow
def test_torchrun_ddp_two_processes_match_one(tiny_model, data_file, one_process, tmp_path):
    driver, records = write_driver(tmp_path)
    out = tmp_path / "two"
    run_ok(torchrun("--standalone", "--nproc_per_node", "2", str(driver), str(records), "train",
                    *as_argv(flags(tiny_model, data_file, out, batch=2))))  # fmt: skip
    ranks = [read_records(records / f"rank{r}.jsonl") for r in (0, 1)]
    assert ranks[0]["lora_sum"] == ranks[1]["lora_sum"]  # DDP kept the replicas identical
    check_matches_one_process(ranks, out, one_process, tiny_model)


@pytest.mark.slow
def test_accelerate_fsdp2_on_cpu_shards_and_matches_one(tiny_model, data_file, one_process, tmp_path):
    driver, records = write_driver(tmp_path)
    out = tmp_path / "fsdp"
    run_ok([sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(FSDP_CPU),
            "--main_process_port", str(free_port()), str(driver), str(records), "train",
            *as_argv(flags(tiny_model, data_file, out, batch=2))])  # fmt: skip
    ranks = [read_records(records / f"rank{r}.jsonl") for r in (0, 1)]
    assert all(r["wrapper"][0].startswith("FSDP") for r in ranks)  # not DDP, as accelerate alone would run it
    (total, local0), (_, local1) = ranks[0]["numel"][0], ranks[1]["numel"][0]
    assert local0 + local1 == total and local0 < total  # each rank holds its shard of the LoRA weights
    check_matches_one_process(ranks, out, one_process, tiny_model)


@pytest.mark.slow
@pytest.mark.parametrize("stage", [2, 3])
def test_accelerate_deepspeed_on_cpu_matches_one(stage, tiny_model, data_file, one_process, tmp_path):
    pytest.importorskip("deepspeed")
    driver, records = write_driver(tmp_path)
    out = tmp_path / f"zero{stage}"
    config = CONFIGS / f"deepspeed_zero{stage}_cpu.yaml"
    # the first DeepSpeed run on a machine compiles its shared-memory collectives (minutes; cached after)
    run_ok([sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(config),
            "--main_process_port", str(free_port()), str(driver), str(records), "train",
            *as_argv(flags(tiny_model, data_file, out, batch=2))], timeout=900)  # fmt: skip
    ranks = [read_records(records / f"rank{r}.jsonl") for r in (0, 1)]
    assert (out / "checkpoint-3" / "global_step3").is_dir()  # DeepSpeed's engine wrote the checkpoint
    check_matches_one_process(ranks, out, one_process, tiny_model)


@pytest.mark.slow
def test_two_nodes_c10d_rendezvous_match_one(tiny_model, data_file, one_process, tmp_path):
    driver, records = write_driver(tmp_path)
    out = tmp_path / "nodes"
    endpoint = f"127.0.0.1:{free_port()}"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    logs = [
        tmp_path / f"node{rank}.log" for rank in (0, 1)
    ]  # files, not pipes: a full pipe would stall a node
    nodes = [
        subprocess.Popen(torchrun("--nnodes", "2", "--nproc_per_node", "1", "--node_rank", str(rank),
                                  "--rdzv_backend", "c10d", "--rdzv_endpoint", endpoint, "--rdzv_id", "test",
                                  str(driver), str(records), "train",
                                  *as_argv(flags(tiny_model, data_file, out, batch=2))),
                         stdout=log.open("w"), stderr=subprocess.STDOUT, env=env)
        for rank, log in enumerate(logs)
    ]  # fmt: skip
    for node, log in zip(nodes, logs, strict=True):
        assert node.wait(timeout=300) == 0, log.read_text()[-4000:]
    ranks = [read_records(records / f"rank{r}.jsonl") for r in (0, 1)]
    assert ranks[0]["lora_sum"] == ranks[1]["lora_sum"]
    check_matches_one_process(ranks, out, one_process, tiny_model)


def test_python_dash_m_cli_runs():
    proc = subprocess.run([sys.executable, "-m", "llm_tuning.cli", "--help"], capture_output=True, text=True)
    assert proc.returncode == 0 and "train" in proc.stdout
