"""The `llm-tuning` command in-process: help, unknown commands, clean errors, and the original's commands."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from llm_tuning.cli import COMMANDS, main


def test_help_lists_every_command(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    assert all(name in out for name in COMMANDS)
    assert main([]) == 0


def test_command_help(capsys):
    assert main(["train", "--help"]) == 0  # argparse's exit becomes main's return code
    out = capsys.readouterr().out
    assert "--learning_rate" in out and "--model_checkpoint" in out and "--tokenized_dataset" in out


def test_sde_help_lists_its_subcommands(capsys):
    assert main(["sde", "--help"]) == 0
    out = capsys.readouterr().out
    assert all(f"sde {sub}" in out for sub in ("render", "score", "run")) and "unknown" not in out
    assert "\n  train " not in out and "tokenize" not in out  # only the sde subcommands
    assert main(["sde", "render", "--help"]) == 0
    assert "--design" in capsys.readouterr().out


def test_unexpected_error_is_one_line_exit_1(monkeypatch, capsys):
    """A bug of ours (not bad input) is one line with exit 1; LLM_TUNING_DEBUG=1 re-raises it."""
    import llm_tuning.sde.commands as commands

    def broken(cfg):
        raise RuntimeError("boom")

    monkeypatch.setattr(commands, "run_render", broken)
    argv = ["sde", "render", "--input", "a.jsonl", "--output", "b.jsonl"]
    monkeypatch.delenv("LLM_TUNING_DEBUG", raising=False)
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert "internal error: RuntimeError: boom" in err and "Traceback" not in err
    monkeypatch.setenv("LLM_TUNING_DEBUG", "1")
    with pytest.raises(RuntimeError, match="boom"):
        main(argv)


def test_unknown_command_exits_2(capsys):
    assert main(["trian"]) == 2
    err = capsys.readouterr().err
    assert "unknown command 'trian'" in err and "train" in err


def test_config_error_is_a_clean_exit_2(capsys):
    assert main(["train", "--data", "x.jsonl", "--lora_dropout", "2"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("llm-tuning train: error:") and "--lora_dropout" in err
    assert "Traceback" not in err


def test_data_error_is_a_clean_exit_2(tiny_model, tmp_path, capsys):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"q": "a", "a": "b"}\n{"q": "c"}\n')
    code = main(
        [
            "tokenize",
            "--model",
            tiny_model,
            "--input_file",
            str(bad),
            "--prompt_key",
            "q",
            "--target_key",
            "a",
        ]
    )
    assert code == 2
    assert "bad.jsonl, row 2, field 'a': is missing" in capsys.readouterr().err


def test_missing_file_and_unknown_model_exit_2(tmp_path, capsys):
    assert (
        main(["tokenize", "--model", "no-such-model-xyz", "--input_file", str(tmp_path / "none.jsonl")]) == 2
    )
    assert "none.jsonl" in capsys.readouterr().err
    rows = tmp_path / "rows.jsonl"
    rows.write_text('{"prompt": "a", "target": "b"}\n')
    assert main(["tokenize", "--model", "no-such-model-xyz", "--input_file", str(rows)]) == 2
    assert "smollm2-135m-instruct" in capsys.readouterr().err


def test_original_tokenize_then_train_by_save_name(tiny_model, qa_file, tmp_path, monkeypatch, capsys):
    """The original README's two commands, flag for flag, run from the project folder."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "data").mkdir()
    qa_file.rename(tmp_path / "data" / "simple_math_4op.json")  # a bare name is looked up in data/
    code = main(["tokenize", "--model_checkpoint", tiny_model, "--input_file", "simple_math_4op.json",
                 "--prompt_key", "q", "--target_key", "a", "--save_name", "simple_math_4op",
                 "--max_seq_length", "2000", "--skip_overlength", "False"])  # fmt: skip
    assert code == 0
    folder = Path("data/tokenized_data/simple_math_4op")
    manifest = json.loads((folder / "llm_tuning_manifest.json").read_text())
    assert manifest["counts"]["rows"] == 4 and manifest["flags"]["skip_overlength"] is False
    code = main(["train", "--model_checkpoint", tiny_model, "--tokenized_dataset", "simple_math_4op",
                 "--lora_rank", "4", "--per_device_train_batch_size", "2", "--gradient_accumulation_steps", "1",
                 "--max_steps", "2", "--save_steps", "200", "--save_total_limit", "2", "--learning_rate", "1e-4",
                 "--fp16", "--remove_unused_columns", "False", "--logging_steps", "1",
                 "--output_dir", "weights/simple_math_4op", "--report_to", "none"])  # fmt: skip
    assert code == 0
    out = Path("weights/simple_math_4op")
    assert (out / "adapter_model.safetensors").is_file()
    log = json.loads((out / "training_log.json").read_text())
    assert log["summary"]["steps"] == 2
    capsys.readouterr()
    code = main(["predict", "--model", tiny_model, "--adapter", str(out), "--data_path", "data/simple_math_4op.json",
                 "--prompt_key", "q", "--target_key", "a", "--max_new_tokens", "3", "--output_file", "pred.jsonl"])  # fmt: skip
    assert code == 0
    rows = [json.loads(line) for line in Path("pred.jsonl").read_text().splitlines()]
    assert len(rows) == 4 and rows[0]["target"] == "1 + 2 = 3"
    code = main(["chat", "--model", tiny_model, "--adapter", str(out), "--message", "What is 1 + 2?",
                 "--max_new_tokens", "3"])  # fmt: skip
    assert code == 0
    assert capsys.readouterr().out.strip() != ""  # the reply is printed


def test_train_with_invalid_target_modules_exits_2(tiny_model, qa_file, tmp_path, capsys):
    code = main(["train", "--model", tiny_model, "--data", str(qa_file), "--prompt_key", "q", "--target_key", "a",
                 "--target_modules", "query_key_value", "--output_dir", str(tmp_path / "w"), "--report_to", "none"])  # fmt: skip
    assert code == 2
    err = capsys.readouterr().err
    assert "--target_modules query_key_value" in err and "q_proj" in err
