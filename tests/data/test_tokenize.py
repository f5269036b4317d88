"""The tokenize cache (reuse and every kind of miss), its manifest, overlength rows and atomic writes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from datasets import load_from_disk

from llm_tuning.data.read import DataError
from llm_tuning.data.tokenize import MANIFEST, TokenizeConfig, fingerprint, run


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


@pytest.fixture()
def two_key_file(tmp_path) -> Path:
    """Rows with two prompt/answer pairs, so changing --prompt_key / --target_key changes the data."""
    rows = [{"q": f"What is {a} + {b}?", "a": f"{a} + {b} = {a + b}", "question": f"{a} x {b}?",
             "answer": f"{a * b}"} for a, b in [(1, 2), (3, 4), (5, 6)]]  # fmt: skip
    rows.append({"q": "hi", "a": "hello", "question": "hey", "answer": "yo"})  # shorter than 24 tokens
    return write_jsonl(tmp_path / "rows.jsonl", rows)


def tok(model: str, path: Path, **flags) -> TokenizeConfig:
    return TokenizeConfig(
        input_file=str(path), model=model, **{"prompt_key": "q", "target_key": "a", **flags}
    )


def column(result, name: str = "input_ids") -> list:
    return load_from_disk(str(result.path))[name]


def test_second_identical_run_reuses(tiny_model, two_key_file):
    first = run(tok(tiny_model, two_key_file))
    second = run(tok(tiny_model, two_key_file))
    assert not first.reused and second.reused
    assert second.path == first.path and second.rows == first.rows == 4
    assert Path(first.path).parent.parent.name == "home"  # default location: the cache under LLM_TUNING_HOME


def test_manifest_records_model_flags_source_and_counts(tiny_model, two_key_file):
    result = run(tok(tiny_model, two_key_file, max_seq_length=512))
    manifest = json.loads((result.path / MANIFEST).read_text())
    assert manifest["model"] == tiny_model
    assert manifest["flags"] == {"prompt_key": "q", "target_key": "a", "max_seq_length": 512, "skip_overlength": False,
                                 "template": "chat", "prompt_loss": False, "system_prompt": None}  # fmt: skip
    import hashlib

    assert manifest["source_sha256"] == hashlib.sha256(two_key_file.read_bytes()).hexdigest()
    assert manifest["source"] == str(two_key_file.resolve())
    assert manifest["counts"] == {"total": 4, "truncated": 0, "skipped": 0, "rows": 4}
    assert len(manifest["tokenizer"]) == 64 and manifest["fingerprint"]


@pytest.mark.parametrize(
    "change",
    [
        {"prompt_key": "question", "target_key": "answer"},
        {"max_seq_length": 24},
        {"max_seq_length": 24, "skip_overlength": True},
        {"template": "none"},
        {"prompt_loss": True},
        {"system_prompt": "Answer briefly."},
    ],
    ids=lambda c: "+".join(c),
)
def test_each_flag_change_misses_the_cache(tiny_model, two_key_file, change):
    base = run(tok(tiny_model, two_key_file, max_seq_length=40))
    changed = run(tok(tiny_model, two_key_file, **{"max_seq_length": 40, **change}))
    assert not changed.reused
    assert changed.path != base.path
    assert (column(changed), column(changed, "labels")) != (column(base), column(base, "labels"))
    again = run(tok(tiny_model, two_key_file, **{"max_seq_length": 40, **change}))
    assert again.reused and again.path == changed.path


def test_skip_overlength_alone_is_a_cache_key(tiny_model, two_key_file):
    """Without overlength rows the data is the same, but the flag still keys the cache."""
    a = fingerprint(tok(tiny_model, two_key_file), two_key_file)
    b = fingerprint(tok(tiny_model, two_key_file, skip_overlength=True), two_key_file)
    assert a["fingerprint"] != b["fingerprint"]


def test_a_model_with_another_tokenizer_misses(tiny_model, other_model, two_key_file):
    base = run(tok(tiny_model, two_key_file))
    other = run(tok(other_model, two_key_file))
    assert not other.reused and other.path != base.path
    assert column(other) != column(base)  # the other template adds a system turn


def test_editing_the_tokenizer_files_misses(tiny_model, two_key_file, tmp_path):
    import shutil

    model = tmp_path / "model"
    shutil.copytree(tiny_model, model)
    base = run(tok(str(model), two_key_file))
    config = json.loads((model / "tokenizer_config.json").read_text())
    config["model_max_length"] = 1234
    (model / "tokenizer_config.json").write_text(json.dumps(config))
    assert not run(tok(str(model), two_key_file)).reused
    assert base.rows == 4


def test_changed_file_content_misses(tiny_model, two_key_file):
    base = run(tok(tiny_model, two_key_file))
    with two_key_file.open("a") as f:
        f.write(json.dumps({"q": "What is 9 + 9?", "a": "9 + 9 = 18"}) + "\n")
    changed = run(tok(tiny_model, two_key_file))
    assert not changed.reused and changed.rows == base.rows + 1 == 5


def test_save_name_folder_is_replaced_on_a_miss(tiny_model, two_key_file, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    first = run(tok(tiny_model, two_key_file, save_name="math"))
    second = run(tok(tiny_model, two_key_file, save_name="math", prompt_loss=True))
    assert first.path == second.path == Path("data/tokenized_data/math")
    assert not second.reused
    assert json.loads((second.path / MANIFEST).read_text())["flags"]["prompt_loss"] is True
    assert column(second, "labels") == column(second)
    assert sorted(p.name for p in Path("data/tokenized_data").iterdir()) == ["math"]  # no temp folders left


# ---- overlength -------------------------------------------------------------------------------


@pytest.fixture()
def mixed_length_file(tmp_path) -> Path:
    rows = [
        {"q": "hi", "a": "hello"},  # short
        {"q": "hi", "a": "the quick brown fox jumps over the lazy dog " * 4},  # long answer: truncated
        {"q": "the quick brown fox jumps over the lazy dog " * 6, "a": "yes"},  # prompt fills the window
    ]
    return write_jsonl(tmp_path / "mixed.jsonl", rows)


def test_truncation_keeps_rows_and_drops_rows_with_no_answer_left(tiny_model, mixed_length_file):
    result = run(tok(tiny_model, mixed_length_file, max_seq_length=24))
    assert (result.total, result.rows, result.truncated, result.skipped) == (3, 2, 1, 1)
    lengths = column(result, "length")
    assert max(lengths) == 24 and all(n <= 24 for n in lengths)
    labels = column(result, "labels")
    assert all(any(x != -100 for x in row) for row in labels)  # every kept row trains on something


def test_skip_overlength_drops_every_long_row(tiny_model, mixed_length_file):
    result = run(tok(tiny_model, mixed_length_file, max_seq_length=24, skip_overlength=True))
    assert (result.total, result.rows, result.truncated, result.skipped) == (3, 1, 0, 2)
    manifest = json.loads((result.path / MANIFEST).read_text())
    assert manifest["counts"] == {"total": 3, "truncated": 0, "skipped": 2, "rows": 1}


def test_every_row_overlength_is_an_error(tiny_model, mixed_length_file):
    with pytest.raises(DataError, match="--max_seq_length 4"):
        run(tok(tiny_model, mixed_length_file, max_seq_length=4, skip_overlength=True))


# ---- nothing half-written ---------------------------------------------------------------------


def test_bad_last_row_leaves_no_output(tiny_model, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    rows = [{"q": f"What is {i} + 1?", "a": f"{i + 1}"} for i in range(5)] + [{"q": "broken", "a": ""}]
    path = write_jsonl(tmp_path / "bad_end.jsonl", rows)
    with pytest.raises(DataError, match="row 6"):
        run(tok(tiny_model, path, save_name="bad"))
    assert not Path("data/tokenized_data/bad").exists()
    leftovers = list(Path("data/tokenized_data").glob("*")) if Path("data/tokenized_data").exists() else []
    assert leftovers == []


def test_failure_midway_keeps_the_old_folder_intact(tiny_model, two_key_file, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    good = run(tok(tiny_model, two_key_file, save_name="math"))
    manifest = (good.path / MANIFEST).read_text()
    with two_key_file.open("a") as f:
        f.write('{"q": "What is 2 + 2?", "a": "4"}\n{"q": broken\n')
    with pytest.raises(DataError, match="row 6"):
        run(tok(tiny_model, two_key_file, save_name="math"))
    assert (good.path / MANIFEST).read_text() == manifest
    assert len(load_from_disk(str(good.path))) == 4


def test_failure_while_saving_cleans_up(tiny_model, two_key_file, tmp_path, monkeypatch):
    from datasets import Dataset

    monkeypatch.chdir(tmp_path)
    good = run(tok(tiny_model, two_key_file, save_name="math"))
    before = (good.path / MANIFEST).read_text()

    def disk_full(self, *args, **kwargs):
        raise OSError("No space left on device")

    monkeypatch.setattr(Dataset, "save_to_disk", disk_full)
    with pytest.raises(OSError, match="No space"):
        run(tok(tiny_model, two_key_file, save_name="math", prompt_loss=True))
    assert (good.path / MANIFEST).read_text() == before
    assert sorted(p.name for p in Path("data/tokenized_data").iterdir()) == ["math"]


def test_forked_workers_give_the_same_dataset_as_one_process(tiny_model, tmp_path):
    rows = [{"q": f"What is {a} + {b}?" + " pad" * (a % 7) * 9, "a": f"{a} + {b} = {a + b}"}
            for a in range(40) for b in range(3)]  # fmt: skip
    data = write_jsonl(tmp_path / "rows.jsonl", rows)
    flags = {"batch_rows": 7, "max_seq_length": 48}
    one = run(tok(tiny_model, data, num_proc=1, output_dir=str(tmp_path / "one"), **flags))
    two = run(tok(tiny_model, data, num_proc=2, output_dir=str(tmp_path / "two"), **flags))
    counts = [(r.rows, r.truncated, r.skipped) for r in (one, two)]
    assert one.truncated > 0 and counts[0] == counts[1]
    for name in ("input_ids", "labels", "length"):
        assert column(one, name) == column(two, name)


def test_a_bad_row_in_a_worker_is_reported_with_its_line(tiny_model, tmp_path):
    rows = [{"q": f"question {i}", "a": f"answer {i}"} for i in range(30)]
    rows[23] = {"q": "question 23"}
    data = write_jsonl(tmp_path / "rows.jsonl", rows)
    with pytest.raises(DataError, match=r"rows.jsonl, row 24, field 'a': is missing"):
        run(tok(tiny_model, data, num_proc=2, batch_rows=5))


def test_token_ids_equal_the_tokenizer_call(tiny_model):
    from llm_tuning.data.encode import token_ids
    from llm_tuning.models.load import load_tokenizer

    tokenizer = load_tokenizer(tiny_model)
    texts = [
        "<|im_start|>user\nWhat is 2 + 2?<|im_end|>\n",
        " leading space",
        "",
        "ünïcode, tabs\tand\nnewlines",
    ]
    assert token_ids(tokenizer, texts) == tokenizer(texts, add_special_tokens=False)["input_ids"]
