"""Config parsing: YAML recipe < flags, the original's flag names and booleans, errors that name the flag."""

from __future__ import annotations

import dataclasses
import re

import pytest
import yaml

from llm_tuning.config import ConfigError, build_parser, make_config, parse_config, save_config, to_bool
from llm_tuning.data.tokenize import TokenizeConfig
from llm_tuning.infer.chat import ChatConfig
from llm_tuning.infer.predict import PredictConfig
from llm_tuning.train.sft import TrainConfig


def test_recipe_then_flags_override(tmp_path):
    recipe = tmp_path / "sft.yaml"
    recipe.write_text(yaml.safe_dump({"data": "train.jsonl", "learning_rate": 1e-3, "lora_rank": 16,
                                      "model_checkpoint": "some/model", "extra_args": {"optim": "sgd"}}))  # fmt: skip
    cfg = parse_config(TrainConfig, [str(recipe), "--learning_rate", "2e-4", "--max_steps", "5"])
    assert cfg.learning_rate == 2e-4 and cfg.max_steps == 5  # flags win
    assert cfg.lora_rank == 16 and cfg.model == "some/model"  # the recipe (an alias included) fills the rest
    assert cfg.extra_args == {"optim": "sgd"}
    assert cfg.per_device_train_batch_size == 4  # untouched defaults stay


def test_original_flag_names_and_bools():
    cfg = parse_config(TokenizeConfig, ["--model_checkpoint", "m", "--input_file", "f.json", "--prompt_key", "q",
                                        "--target_key", "a", "--save_name", "s", "--max_seq_length", "2000",
                                        "--skip_overlength", "False"])  # fmt: skip
    assert (cfg.model, cfg.input_file, cfg.prompt_key, cfg.target_key) == ("m", "f.json", "q", "a")
    assert cfg.max_seq_length == 2000 and cfg.skip_overlength is False
    assert parse_config(TokenizeConfig, ["--input_file", "f", "--skip_overlength"]).skip_overlength is True
    assert (
        parse_config(TokenizeConfig, ["--input_file", "f", "--skip_overlength", "yes"]).skip_overlength
        is True
    )
    train = parse_config(TrainConfig, ["--tokenized_dataset", "x", "--fp16", "--lora_r", "4", "--batch_size", "2",
                                       "--remove_unused_columns", "False"])  # fmt: skip
    assert train.fp16 is True and train.lora_rank == 4 and train.per_device_train_batch_size == 2
    assert train.remove_unused_columns is False


@pytest.mark.parametrize("text, value", [("True", True), ("1", True), ("on", True), ("False", False), ("0", False),
                                         ("no", False), (True, True)])  # fmt: skip
def test_to_bool(text, value):
    assert to_bool(text) is value


def test_bad_bool_and_bad_int_exit_2(capsys):
    with pytest.raises(SystemExit) as info:
        parse_config(TokenizeConfig, ["--input_file", "f", "--skip_overlength", "maybe"])
    assert info.value.code == 2 and "expected true or false" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        parse_config(TrainConfig, ["--data", "f", "--max_steps", "ten"])
    assert "--max_steps" in capsys.readouterr().err


def test_repeatable_list_flag():
    cfg = parse_config(PredictConfig, ["--data_path", "p.jsonl", "--adapter", "a", "--adapter", "b=c:0.5"])
    assert cfg.adapter == ["a", "b=c:0.5"]
    assert PredictConfig(data_path="p").adapter == []  # a fresh list per instance
    assert PredictConfig(data_path="p").adapter is not PredictConfig(data_path="q").adapter


def test_unknown_option_in_recipe_lists_valid_ones(tmp_path):
    recipe = tmp_path / "bad.yaml"
    recipe.write_text("data: train.jsonl\nlearning_rat: 0.1\n")
    with pytest.raises(ConfigError) as info:
        parse_config(TrainConfig, [str(recipe)])
    message = str(info.value)
    assert "bad.yaml" in message and "'learning_rat'" in message and "learning_rate" in message
    assert "lora_dropout" in message


def test_unknown_flag_exits_2_with_the_valid_flags(capsys):
    with pytest.raises(SystemExit) as info:
        parse_config(TrainConfig, ["--data", "f", "--no_such_flag", "0.1"])
    err = capsys.readouterr().err
    assert info.value.code == 2 and "unrecognized arguments: --no_such_flag" in err
    assert "--learning_rate" in err and "--lora_dropout" in err  # the usage line lists every flag


def test_recipe_errors(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        parse_config(TrainConfig, [str(tmp_path / "missing.yaml")])
    listed = tmp_path / "list.yaml"
    listed.write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="mapping"):
        parse_config(TrainConfig, [str(listed)])


@pytest.mark.parametrize(
    "cls, argv, flag",
    [
        (TrainConfig, ["--data", "f", "--template", "foo"], "--template"),
        (TrainConfig, ["--data", "f", "--lora_dropout", "2"], "--lora_dropout"),
        (TrainConfig, ["--data", "f", "--lora_rank", "0"], "--lora_rank"),
        (TrainConfig, ["--data", "f", "--dtype", "int3"], "--dtype"),
        (TrainConfig, ["--data", "f", "--max_seq_length", "0"], "--max_seq_length"),
        (TokenizeConfig, ["--input_file", "f", "--template", "jinja"], "--template"),
        (PredictConfig, ["--data_path", "f", "--batch_size", "-1"], "--batch_size"),
        (ChatConfig, ["--dtype", "half"], "--dtype"),
        (ChatConfig, ["--template", "foo"], "--template"),
        (PredictConfig, ["--data_path", "f", "--template", "chatml"], "--template"),
    ],
)
def test_bad_values_name_the_flag(cls, argv, flag):
    with pytest.raises(ConfigError) as info:
        parse_config(cls, argv)
    assert flag in str(info.value)


def test_template_error_lists_valid_choices():
    with pytest.raises(ConfigError, match="chat, none"):
        TrainConfig(data="f", template="foo")


def test_every_field_has_help_and_a_flag():
    for cls in (TrainConfig, TokenizeConfig, PredictConfig, ChatConfig):
        for f in dataclasses.fields(cls):
            assert f.metadata.get("help"), f"{cls.__name__}.{f.name} has no help"
        text = build_parser(cls, "x").format_help()
        assert all(f"--{f.name}" in text for f in dataclasses.fields(cls))


def test_save_config_roundtrips(tmp_path):
    cfg = TrainConfig(data="train.jsonl", learning_rate=1e-3, extra_args={"optim": "sgd"})
    path = save_config(cfg, tmp_path / "out")
    saved = yaml.safe_load(path.read_text())
    assert saved["learning_rate"] == 1e-3 and saved["data"] == "train.jsonl"
    assert make_config(TrainConfig, saved) == cfg  # a saved config is a valid recipe
    assert sorted(p.name for p in path.parent.iterdir()) == ["llm_tuning_config.yaml"]


def test_recipe_values_take_the_field_type(tmp_path):
    """YAML reads `1e-3` as text and `"False"` as a string: both mean what they say."""
    recipe = tmp_path / "r.yaml"
    recipe.write_text('data: t.jsonl\nlearning_rate: 1e-3\nskip_overlength: "False"\npacking: "no"\n'
                      'lora_rank: "16"\nwarmup_steps: 5\nprevious_lora_weights: one\n')  # fmt: skip
    cfg = parse_config(TrainConfig, [str(recipe)])
    assert cfg.learning_rate == 1e-3 and isinstance(cfg.learning_rate, float)
    assert cfg.skip_overlength is False and cfg.packing is False
    assert cfg.lora_rank == 16 and cfg.warmup_steps == 5.0 and cfg.previous_lora_weights == ["one"]
    recipe.write_text("data: t.jsonl\nskip_overlength: 'True'\n")
    assert parse_config(TrainConfig, [str(recipe)]).skip_overlength is True


@pytest.mark.parametrize(
    "text, needle",
    [
        ("learning_rate: fast", "learning_rate must be a number, got 'fast'"),
        ("lora_rank: 2.5", "lora_rank must be a whole number"),
        ("skip_overlength: perhaps", "skip_overlength must be true or false"),
        ("model: null", "model is empty (null)"),
        ("learning_rate: .nan", "--learning_rate must be > 0"),
        ("lora_alpha: 0", "--lora_alpha must be > 0"),
        ("max_steps: 0", "--max_steps must be >= 1"),
    ],
)
def test_recipe_values_of_the_wrong_type_name_recipe_and_key(tmp_path, text, needle):
    recipe = tmp_path / "r.yaml"
    recipe.write_text(f"data: t.jsonl\n{text}\n")
    with pytest.raises(ConfigError, match=re.escape(needle)):
        parse_config(TrainConfig, [str(recipe)])
