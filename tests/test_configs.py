"""Every shipped YAML loads: each recipe in configs/ into its command's config class (the command is
named in the recipe's `#   llm-tuning COMMAND configs/...` comment), and each accelerate config in
configs/accelerate/ through accelerate's own launcher validation and plugin classes."""

from __future__ import annotations

import dataclasses
import os
import re
from pathlib import Path
from unittest import mock

import pytest
import yaml

from llm_tuning.cli import COMMANDS, _load
from llm_tuning.config import parse_config

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
RECIPES = sorted(p for p in CONFIGS.rglob("*.yaml") if "accelerate" not in p.parts)
ACCELERATE = sorted((CONFIGS / "accelerate").glob("*.yaml"))


def recipe_command(path: Path) -> str:
    """The command a recipe is for, from its usage comment (`llm-tuning train configs/x.yaml`)."""
    relative = path.relative_to(CONFIGS.parent).as_posix()
    for line in path.read_text(encoding="utf-8").splitlines():
        found = re.search(r"llm-tuning ([a-z]+(?: [a-z]+)?) " + re.escape(relative), line)
        if line.startswith("#") and found:
            words = found.group(1)
            return words if words in COMMANDS else words.split()[0]
    raise AssertionError(f"{relative}: no `#   llm-tuning COMMAND {relative}` usage comment")


def test_recipes_are_shipped():
    names = {p.relative_to(CONFIGS).as_posix() for p in RECIPES}
    assert {"sft_lora.yaml", "demo_arithmetic.yaml", "sft_qlora.yaml"} <= names
    assert {p.name for p in ACCELERATE} >= {"deepspeed_zero2.yaml", "deepspeed_zero3.yaml", "fsdp.yaml"}


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.relative_to(CONFIGS).as_posix())
def test_recipe_loads_into_its_config(path):
    command = recipe_command(path)
    assert command in COMMANDS, f"{path.name}: unknown command {command!r}"
    cls = _load(COMMANDS[command][0])
    cfg = parse_config(cls, [str(path)])
    aliases = {a: f.name for f in dataclasses.fields(cls) for a in f.metadata.get("aliases", ())}
    for key, value in yaml.safe_load(path.read_text(encoding="utf-8")).items():
        assert getattr(cfg, aliases.get(key, key)) == value, key  # every key is an option and keeps its value


def test_sft_recipe_reproduces_the_original_flags():
    from llm_tuning.train.sft import TrainConfig

    cfg = parse_config(TrainConfig, [str(CONFIGS / "sft_lora.yaml"), "--learning_rate", "3e-4"])
    assert (cfg.tokenized_dataset, cfg.lora_rank, cfg.per_device_train_batch_size, cfg.save_steps) == (
        "simple_math_4op", 8, 10, 200)  # fmt: skip
    assert cfg.learning_rate == 3e-4  # a flag after the recipe wins


def validated_launch(path: Path):
    """What `accelerate launch --config_file PATH -m llm_tuning.cli train` makes of the file, and its env."""
    from accelerate.commands.launch import _validate_launch_command, launch_command_parser
    from accelerate.utils import prepare_deepspeed_cmd_env, prepare_multi_gpu_env

    args = launch_command_parser().parse_args(["--config_file", str(path), "-m", "llm_tuning.cli", "train"])
    args, defaults, _ = _validate_launch_command(args)
    if args.use_deepspeed:
        args.deepspeed_fields_from_accelerate_config = list(defaults.deepspeed_config.keys())
        return args, prepare_deepspeed_cmd_env(args)[1]
    return args, prepare_multi_gpu_env(args)


@pytest.mark.parametrize("path", ACCELERATE, ids=lambda p: p.name)
def test_accelerate_config_loads(path):
    from accelerate.commands.config.config_args import load_config_from_file

    config = load_config_from_file(str(path))  # rejects unknown top-level keys
    on_cpu = path.stem.endswith("_cpu")  # CPU variants: fp32 (bf16 matmuls crawl on CPUs) on CPU processes
    assert (config.mixed_precision, config.use_cpu) == (("no", True) if on_cpu else ("bf16", False))
    args, env = validated_launch(path)
    assert args.module and args.training_script == "llm_tuning.cli"


@pytest.mark.parametrize(
    "name, stage",
    [("deepspeed_zero2.yaml", 2), ("deepspeed_zero3.yaml", 3), ("deepspeed_zero2_cpu.yaml", 2),
     ("deepspeed_zero3_cpu.yaml", 3)],
)  # fmt: skip
def test_deepspeed_configs_build_the_plugin(name, stage):
    from accelerate.utils import DeepSpeedPlugin

    _, env = validated_launch(CONFIGS / "accelerate" / name)
    with mock.patch.dict(os.environ, env):
        plugin = DeepSpeedPlugin()
    zero = plugin.deepspeed_config["zero_optimization"]
    assert plugin.zero_stage == stage and zero["stage"] == stage
    assert zero["stage3_gather_16bit_weights_on_model_save"] == (
        stage == 3
    )  # ZeRO-3 gathers the adapter on save


@pytest.mark.parametrize("name", ["fsdp.yaml", "fsdp_cpu.yaml"])
def test_fsdp_config_builds_the_plugin(name):
    from accelerate.utils import FullyShardedDataParallelPlugin

    _, env = validated_launch(CONFIGS / "accelerate" / name)
    with mock.patch.dict(os.environ, env):
        plugin = FullyShardedDataParallelPlugin()
    assert plugin.fsdp_version == 2
    assert plugin.state_dict_type.name == "FULL_STATE_DICT"  # Trainer.save_model gathers a whole adapter
    assert plugin.auto_wrap_policy.__name__ == "transformer_auto_wrap_policy"
