"""The train form is derived from TrainConfig: same fields, defaults and help; its command line parses back."""

from __future__ import annotations

import dataclasses

import pytest

from llm_tuning.board.forms import command_args, config_values, form_fields, form_groups
from llm_tuning.config import ConfigError, build_parser, make_config, parse_config
from llm_tuning.train.sft import TrainConfig


def test_form_fields_are_train_config_fields():
    fields = [f for g in form_groups(TrainConfig) for f in g["fields"]]
    names = [f["name"] for f in fields]
    assert sorted(names) == sorted(f.name for f in dataclasses.fields(TrainConfig) if f.init)
    assert len(names) == len(set(names))
    by_name = {f["name"]: f for f in fields}
    for f in dataclasses.fields(TrainConfig):
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        assert by_name[f.name]["default"] == default and by_name[f.name]["help"] == f.metadata["help"]
    assert by_name["packing"]["kind"] == "bool" and by_name["data"]["kind"] == "list"
    assert by_name["lora_rank"]["group"] == "lora" and by_name["model"]["group"] == "model"


def test_groups_follow_the_help_order():
    """Within each group the fields keep the order in which `llm-tuning train --help` lists them."""
    helped = [
        a.dest
        for a in build_parser(TrainConfig, "llm-tuning train")._actions
        if a.dest not in ("help", "recipe")
    ]
    for group in form_groups(TrainConfig)[1:]:
        names = [f["name"] for f in group["fields"]]
        assert names == sorted(names, key=helped.index)


def test_form_of_a_made_up_dataclass_follows_it():
    @dataclasses.dataclass
    class Toy(TrainConfig):
        new_flag: int = dataclasses.field(default=3, metadata={"help": "a new flag"})

    assert "new_flag" in [f["name"] for f in form_fields(Toy)]


def test_command_line_parses_back_to_the_same_config(tmp_path):
    raw = {"data": ["data/train.jsonl"], "prompt_key": "q", "max_steps": "3", "packing": False, "learning_rate": "1e-3",
           "output_dir": "w/a", "system_prompt": "", "previous_lora_weights": [], "lora_alpha": ""}  # fmt: skip
    values = config_values(TrainConfig, raw, tmp_path)
    assert values == {"data": ["data/train.jsonl"], "prompt_key": "q", "max_steps": 3, "packing": False,
                      "learning_rate": 1e-3, "output_dir": "w/a"}  # fmt: skip
    args = command_args(TrainConfig, values)
    assert parse_config(TrainConfig, args) == make_config(TrainConfig, values)


@pytest.mark.parametrize(
    ("raw", "message"),
    [({"max_steps": "three"}, "max_steps must be a whole number"), ({"nope": 1}, "unknown option 'nope'"),
     ({"data": ["/etc/passwd"]}, "outside the working folder"), ({"output_dir": "../out"}, "outside the working folder")],
)  # fmt: skip
def test_bad_form_values_name_the_flag(tmp_path, raw, message):
    with pytest.raises(ConfigError, match=message):
        config_values(TrainConfig, raw, tmp_path)


def test_paths_in_values_cannot_leave_the_folder(tmp_path):
    import os

    work, out = tmp_path / "work", tmp_path / "out"
    work.mkdir(), out.mkdir()
    os.symlink(out, work / "link")
    for raw in ({"output_dir": "link/new_run"}, {"data": ["link/rows.jsonl:0.5"]}, {"previous_lora_weights": ["a=link:0.5"]},
                {"output_dir": "~/runs"}, {"data": [f"{out}/rows.jsonl"]}):  # fmt: skip
        with pytest.raises(ConfigError, match="--(output_dir|data|previous_lora_weights): "):
            config_values(TrainConfig, raw, work)
    fine = {
        "model": "HuggingFaceTB/SmolLM2-135M",
        "lr_scheduler_type": "linear",
        "data": ["d.jsonl:0.5"],
        "output_dir": "w/a",
    }
    assert config_values(TrainConfig, fine, work) == {**fine, "lr_scheduler_type": "linear"}
