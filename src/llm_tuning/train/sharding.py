"""Sharded launch paths that need a hand on machines without GPUs: FSDP2 and DeepSpeed on CPU processes.

    accelerate launch --config_file configs/accelerate/fsdp_cpu.yaml -m llm_tuning.cli train --data train.jsonl

accelerate (1.15) turns an FSDP launch on CPU processes into plain DDP without a word: its state takes the
FSDP plugin only for GPU-like devices and leaves CPU processes as MULTI_CPU, so every rank keeps the whole
model. torch's FSDP2 (`fully_shard`) itself runs on CPU with gloo, so `use_fsdp_on_cpu` switches the
Trainer's accelerator to FSDP after it is built: the model is then sharded by accelerate's own FSDP2 code
(`fsdp2_prepare_model`), saved through its full-state-dict gather, checkpointed by its FSDP checkpoint code.

DeepSpeed (0.19) runs on CPU processes too (its CPU accelerator, collectives over gloo): `use_cpu` would
make accelerate skip it, again without a word, so `cpu_process_flags` leaves it off under a DeepSpeed launch.
"""

from __future__ import annotations

import logging
import os
from typing import Any

from llm_tuning.config import ConfigError

logger = logging.getLogger(__name__)


def _flag(name: str) -> bool:
    return os.environ.get(name, "false").lower() == "true"


def use_fsdp_on_cpu(trainer: Any) -> bool:
    """Under an FSDP launch (ACCELERATE_USE_FSDP) on CPU processes, make the trainer shard with FSDP.

    Returns whether it switched. A no-op on GPUs (accelerate handles FSDP there) and for one process.
    """
    from accelerate.state import AcceleratorState, PartialState
    from accelerate.utils import DistributedType, FullyShardedDataParallelPlugin

    state = trainer.accelerator.state
    if not _flag("ACCELERATE_USE_FSDP") or state.distributed_type != DistributedType.MULTI_CPU:
        return False
    plugin = FullyShardedDataParallelPlugin()  # from the FSDP_* variables `accelerate launch` set
    if plugin.activation_checkpointing and trainer.args.activation_checkpointing:
        raise ConfigError(
            "--gradient_checkpointing and the accelerate config's fsdp_activation_checkpointing are both on: "
            "keep one"
        )
    # the checks accelerate's state would have made for a GPU: a plugin it takes only for the distributed
    # type FSDP, on both shared states (the accelerator's and the processes')
    state.fsdp_plugin = plugin
    AcceleratorState._shared_state["distributed_type"] = DistributedType.FSDP
    PartialState._shared_state["distributed_type"] = DistributedType.FSDP
    trainer.is_fsdp_enabled = True
    logger.info(
        "FSDP%d on %d CPU processes (gloo): the model is sharded by blocks, the adapter gathered on save",
        plugin.fsdp_version, state.num_processes,
    )  # fmt: skip
    return True


def cpu_process_flags(cpu: bool) -> dict[str, Any]:
    """TrainingArguments flags for CPU processes: `use_cpu`, except under a DeepSpeed launch.

    With use_cpu accelerate skips DeepSpeed without a word (plain DDP); without it, accelerate hands the
    processes to DeepSpeed, whose CPU accelerator runs its collectives over gloo when told so.
    """
    if cpu and _flag("ACCELERATE_USE_DEEPSPEED"):
        return {"use_cpu": False, "ddp_backend": "gloo"}
    return {"use_cpu": cpu}


def check_launch(cpu: bool) -> None:
    """Refuse, before any loading, a DeepSpeed launch on CPU processes whose config asks for bf16 / fp16.

    DeepSpeed would otherwise stop after the model is loaded with a mismatch traceback (its config says
    bf16, the Trainer's arguments fp32, as they are on CPU); bf16 matmuls crawl on CPUs without AMX anyway.
    """
    precision = os.environ.get("ACCELERATE_MIXED_PRECISION", "no").lower()
    if cpu and _flag("ACCELERATE_USE_DEEPSPEED") and precision != "no":
        raise ConfigError(
            f"the accelerate config asks DeepSpeed for mixed_precision {precision!r}, which these CPU processes "
            "do not train in: launch with configs/accelerate/deepspeed_zero2_cpu.yaml / deepspeed_zero3_cpu.yaml "
            "(mixed_precision: 'no') or set mixed_precision: 'no' in yours"
        )
