"""Resume only complete checkpoints of the same run; never start over another run's; the adapter swap is
atomic; the log and train_loss carry across a resume (issue 11)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import llm_tuning.train.sft as sft
from llm_tuning import files
from llm_tuning.checkpoints import DONE, WRITING
from llm_tuning.cli import main
from llm_tuning.config import ConfigError
from llm_tuning.train.sft import TrainConfig


def quick(model: str, data: Path, out: Path, **overrides) -> TrainConfig:
    values = dict(model=model, data=str(data), prompt_key="q", target_key="a", output_dir=str(out), max_steps=4,
                  per_device_train_batch_size=2, learning_rate=1e-2, lr_scheduler_type="constant", warmup_steps=0,
                  lora_rank=4, lora_dropout=0.0, logging_steps=1, save_steps=2, report_to="none", device="cpu")  # fmt: skip
    return TrainConfig(**{**values, **overrides})


@pytest.fixture(scope="module")
def data_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("resume-data") / "rows.jsonl"
    rows = [{"q": f"What is {a} + 1?", "a": f"{a} + 1 = {a + 1}"} for a in range(8)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def whole(tiny_model, data_file, tmp_path_factory) -> Path:
    """An uninterrupted 4-step run with checkpoints at steps 2 and 4."""
    out = tmp_path_factory.mktemp("whole") / "out"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("LLM_TUNING_HOME", str(tmp_path_factory.mktemp("home")))
        sft.run(quick(tiny_model, data_file, out))
    return out


def same_adapter(a: Path, b: Path) -> bool:
    x, y = load_file(str(a / "adapter_model.safetensors")), load_file(str(b / "adapter_model.safetensors"))
    return x.keys() == y.keys() and all(torch.equal(x[k], y[k]) for k in x)


def test_checkpoints_are_marked_complete_and_the_run_recorded(whole):
    for step in (2, 4):
        marker = json.loads((whole / f"checkpoint-{step}" / DONE).read_text())
        assert marker["step"] == step and marker["loss_sum"] > 0
        assert not (whole / f"checkpoint-{step}" / WRITING).exists()
    run = json.loads((whole / "llm_tuning_run.json").read_text())
    assert run["id"] == marker["run"] and run["config"]["learning_rate"] == 0.01


def test_latest_skips_half_written_checkpoints_and_equals_the_uninterrupted_run(
    tiny_model, data_file, whole, tmp_path, caplog
):
    out = tmp_path / "out"
    out.mkdir()
    shutil.copytree(whole / "checkpoint-2", out / "checkpoint-2")
    half = shutil.copytree(whole / "checkpoint-4", out / "checkpoint-4")  # killed while being written:
    (half / DONE).rename(half / WRITING)
    (half / "trainer_state.json").write_text('{"global_st')  # the Trainer's last file, half there
    (out / "checkpoint-6").mkdir()  # killed right after the folder was made
    result = sft.run(quick(tiny_model, data_file, out, resume_from_checkpoint="latest"))
    assert "skipping" in caplog.text and "checkpoint-4: incomplete" in caplog.text
    assert result.steps == 4 and same_adapter(whole, out)
    logs = [json.loads((d / "training_log.json").read_text()) for d in (whole, out)]
    losses = [[(r["step"], r["loss"]) for r in log["log"] if "loss" in r] for log in logs]
    assert losses[0] == losses[1] and [s for s, _ in losses[0]] == [1, 2, 3, 4]
    assert logs[1]["summary"]["train_loss"] == pytest.approx(logs[0]["summary"]["train_loss"], rel=1e-12)


def test_an_incomplete_checkpoint_named_explicitly_is_refused(tiny_model, data_file, whole, tmp_path):
    half = shutil.copytree(whole / "checkpoint-4", tmp_path / "checkpoint-4")
    (half / DONE).rename(half / WRITING)
    (half / "trainer_state.json").unlink()
    with pytest.raises(ConfigError, match="checkpoint-4 is incomplete"):
        sft.run(quick(tiny_model, data_file, tmp_path / "out", resume_from_checkpoint=str(half)))


def test_another_runs_checkpoint_is_refused_naming_what_differs(tiny_model, data_file, whole, tmp_path):
    out = tmp_path / "out"
    shutil.copytree(whole, out)
    with pytest.raises(ConfigError, match=r"belongs to another run \(it differs in --learning_rate\)"):
        sft.run(quick(tiny_model, data_file, out, learning_rate=5e-3, resume_from_checkpoint="latest"))


def test_a_new_run_over_another_runs_checkpoints_needs_the_flag(
    tiny_model, data_file, whole, tmp_path, capsys
):
    out = tmp_path / "out"
    shutil.copytree(whole, out)
    (out / "notes.txt").write_text("mine")
    args = ["train", "--model", tiny_model, "--data", str(data_file), "--prompt_key", "q", "--target_key", "a",
            "--output_dir", str(out), "--max_steps", "2", "--save_steps", "2", "--learning_rate", "5e-3",
            "--report_to", "none", "--lora_rank", "4"]  # fmt: skip
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "holds checkpoints of another run (checkpoint-4)" in err and "--overwrite_output_dir" in err
    assert "Traceback" not in err and same_adapter(whole, out)  # nothing touched
    assert main([*args, "--overwrite_output_dir"]) == 0
    assert sorted(p.name for p in out.glob("checkpoint-*")) == ["checkpoint-2"]  # the new run's only
    assert (out / "notes.txt").read_text() == "mine"


def test_the_flag_never_deletes_a_checkpoint_folder_we_did_not_write(tiny_model, data_file, tmp_path):
    out = tmp_path / "out"
    (out / "checkpoint-7").mkdir(parents=True)
    (out / "checkpoint-7" / "model.bin").write_text("someone else's")
    with pytest.raises(ConfigError, match="checkpoint-7 was not written by llm-tuning"):
        sft.run(quick(tiny_model, data_file, out, overwrite_output_dir=True))
    assert (out / "checkpoint-7" / "model.bin").exists()


def test_a_kill_during_the_adapter_swap_leaves_a_whole_adapter(
    tiny_model, data_file, whole, tmp_path, monkeypatch
):
    """Killed after the exchange: the new adapter is whole; the next run puts the other entries back."""
    out = tmp_path / "out"
    shutil.copytree(whole, out)
    old_config = (out / "adapter_config.json").read_text()
    exchange = files.exchange

    def exchange_then_die(a: Path, b: Path) -> bool:
        if not exchange(a, b):
            pytest.skip("no renameat2 exchange on this system")
        raise KeyboardInterrupt  # the kill: right after the one system call that swaps the adapter

    monkeypatch.setattr(files, "exchange", exchange_then_die)
    with pytest.raises(KeyboardInterrupt):
        sft.run(quick(tiny_model, data_file, out, lora_rank=8, overwrite_output_dir=True))
    monkeypatch.undo()
    config = json.loads((out / "adapter_config.json").read_text())
    weights = load_file(str(out / "adapter_model.safetensors"))
    ranks = {t.shape[0] for k, t in weights.items() if "lora_A" in k}
    assert config["r"] == 8 and ranks == {8} and old_config != (out / "adapter_config.json").read_text()
    assert not (out / "checkpoint-2").exists()  # the old folder, with the checkpoints, waits beside it...
    sft.run(
        quick(tiny_model, data_file, out, lora_rank=8, resume_from_checkpoint="latest")
    )  # ...until the next run
    assert (out / "checkpoint-2").is_dir() and not list(tmp_path.glob(".out*"))


def test_the_same_data_by_another_path_is_the_same_run(tiny_model, data_file, whole, tmp_path):
    moved = shutil.copy(data_file, tmp_path / "moved.jsonl")
    out = tmp_path / "out"
    out.mkdir()
    shutil.copytree(whole / "checkpoint-2", out / "checkpoint-2")
    sft.run(quick(tiny_model, moved, out, resume_from_checkpoint="latest"))
    assert same_adapter(whole, out)
    edited = tmp_path / "edited.jsonl"
    edited.write_text(data_file.read_text().replace("7 + 1 = 8", "7 + 1 = 9"))
    with pytest.raises(ConfigError, match=r"differs in the data"):
        sft.run(quick(tiny_model, edited, out, resume_from_checkpoint="latest"))
