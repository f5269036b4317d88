"""The atomic-write helpers: the old or the new, never a mix; nothing of the user's lost."""

from __future__ import annotations

import json
import os

import pytest

from llm_tuning import files


@pytest.fixture()
def work(tmp_path):
    """A folder of its own (the shared tmp_path also holds the test's LLM_TUNING_HOME)."""
    (tmp_path / "work").mkdir()
    return tmp_path / "work"


def test_write_text_and_json_replace_and_leave_no_temp(work):
    path = work / "a" / "report.md"
    files.write_text(path, "old")
    files.write_json(path, {"x": 1})
    assert json.loads(path.read_text()) == {"x": 1}
    assert sorted(p.name for p in path.parent.iterdir()) == ["report.md"]


def test_a_failed_write_keeps_the_old_file(work):
    path = work / "log.json"
    path.write_text("old")
    with pytest.raises(RuntimeError), files.atomic_path(path) as tmp:
        tmp.write_text("half")
        raise RuntimeError("killed")
    assert path.read_text() == "old"
    assert os.listdir(work) == ["log.json"]


def test_replace_folder_swaps_in_the_new_one_whole(work):
    target = work / "set"
    target.mkdir()
    (target / "old.txt").write_text("old")
    with files.new_folder(target) as tmp:
        (tmp / "new.txt").write_text("new")
        assert (target / "old.txt").exists()  # the old one stays until the new one is complete
    assert [p.name for p in target.iterdir()] == ["new.txt"]
    assert os.listdir(work) == ["set"]


def test_exchange_swaps_two_folders_on_linux(work):
    (work / "a").mkdir()
    (work / "a" / "in_a").touch()
    (work / "b").mkdir()
    if not files.exchange(work / "a", work / "b"):
        pytest.skip("no renameat2 exchange on this system")
    assert (work / "b" / "in_a").exists()


def _adapter(folder, version: str) -> None:
    for name in ("adapter_config.json", "adapter_model.safetensors"):
        (folder / name).write_text(version)


def test_install_files_replaces_the_set_and_keeps_other_entries(work):
    out = work / "weights"
    (out / "checkpoint-2").mkdir(parents=True)
    (out / "notes.txt").write_text("mine")
    _adapter(out, "old")
    staged = files.staging_folder(out)
    _adapter(staged, "new")
    files.install_files(staged, out)
    assert sorted(p.name for p in out.iterdir()) == [
        "adapter_config.json", "adapter_model.safetensors", "checkpoint-2", "notes.txt"
    ]  # fmt: skip
    assert {(out / n).read_text() for n in ("adapter_config.json", "adapter_model.safetensors")} == {"new"}
    assert os.listdir(work) == ["weights"]


def test_an_install_killed_after_the_exchange_is_finished_by_the_next_one(work, monkeypatch):
    out = work / "weights"
    (out / "runs").mkdir(parents=True)
    (out / "notes.txt").write_text("mine")
    _adapter(out, "old")
    staged = files.staging_folder(out)
    _adapter(staged, "new")
    monkeypatch.setattr(files, "finish_install", lambda out: None)  # the kill: right after the exchange
    files.install_files(staged, out)
    monkeypatch.undo()
    if (out / "notes.txt").exists():
        pytest.skip("no renameat2 exchange on this system")
    # the adapter is the new one, whole; the user's entries wait in the sibling...
    assert {(out / n).read_text() for n in ("adapter_config.json", "adapter_model.safetensors")} == {"new"}
    files.finish_install(out)  # ...until the next save puts them back
    assert (out / "notes.txt").read_text() == "mine" and (out / "runs").is_dir()
    assert os.listdir(work) == ["weights"]


def test_an_install_killed_before_the_exchange_leaves_the_old_set(work):
    out = work / "weights"
    out.mkdir()
    _adapter(out, "old")
    staged = files.staging_folder(out)
    (staged / "adapter_model.safetensors").write_text("new")  # killed while writing the new set
    files.finish_install(out)
    assert {(out / n).read_text() for n in ("adapter_config.json", "adapter_model.safetensors")} == {"old"}
    assert os.listdir(work) == ["weights"]


def test_install_into_the_working_directory_keeps_the_folder(work, monkeypatch):
    out = work / "weights"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    monkeypatch.chdir(out)
    inode = os.stat(out).st_ino
    staged = files.staging_folder(".")
    _adapter(staged, "new")
    files.install_files(staged, ".")
    assert os.stat(out).st_ino == inode  # the shell's folder was not swapped away
    assert sorted(os.listdir(out)) == ["adapter_config.json", "adapter_model.safetensors", "notes.txt"]


def test_temp_folders_of_dead_processes_are_cleared(work):
    target = work / "set"
    dead = work / ".set.999999999.abc.partial"  # no such pid
    live = work / f".set.{os.getppid()}.abc.partial"  # a running process's: left alone
    other = work / ".settings.999999999.abc.partial"  # another target's
    for folder in (dead, live, other):
        folder.mkdir()
    with files.new_folder(target) as tmp:
        (tmp / "x").touch()
    assert not dead.exists() and live.exists() and other.exists() and (target / "x").exists()
