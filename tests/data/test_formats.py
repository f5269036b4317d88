"""Every input format gives the same training rows; bad input names the file, the row and the field."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from datasets import load_from_disk

from llm_tuning.data.formats import row_to_messages
from llm_tuning.data.read import DataError, iter_rows, write_jsonl
from llm_tuning.data.tokenize import TokenizeConfig, run
from llm_tuning.models.resolve import ModelNotFoundError

QA = [("What is 1 + 2?", "1 + 2 = 3"), ("What is 9 x 8?", "9 x 8 = 72")]


def trained_text(tokenizer, input_ids: list[int], labels: list[int]) -> str:
    return tokenizer.decode([t for t, label in zip(input_ids, labels, strict=True) if label != -100])


def tokenize_rows(model: str, path: Path, **flags):
    result = run(TokenizeConfig(input_file=str(path), model=model, **flags))
    return result, load_from_disk(str(result.path))


def jsonl(rows: list[dict]) -> str:
    return "".join(json.dumps(r) + "\n" for r in rows)


def csv_text(rows: list[dict]) -> str:
    import csv
    import io

    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue()


PAIRS = [{"q": q, "a": a} for q, a in QA]
FILES = {
    "array.json": json.dumps(PAIRS, indent=1),
    "rows.jsonl": jsonl(PAIRS),
    "original.json": jsonl(PAIRS),  # the original's JSON lines in a .json file
    "rows.csv": csv_text(PAIRS),
}


@pytest.mark.parametrize("name", sorted(FILES))
def test_pair_files_of_every_kind_tokenize_the_same(tiny_model, tokenizer, tmp_path, name):
    path = tmp_path / name
    path.write_text(FILES[name], encoding="utf-8")
    assert [n for n, _ in iter_rows(path)] == [1, 2]
    result, data = tokenize_rows(tiny_model, path, prompt_key="q", target_key="a")
    assert result.rows == 2
    assert [trained_text(tokenizer, r["input_ids"], r["labels"]) for r in data] == [
        a + "<|im_end|>" for _, a in QA
    ]
    assert "What is 9 x 8?" in tokenizer.decode(data[1]["input_ids"])


CHAT_ROWS = {
    "alpaca": [{"instruction": q, "output": a} for q, a in QA],
    "messages": [
        {"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}]} for q, a in QA
    ],
    "sharegpt": [
        {"conversations": [{"from": "human", "value": q}, {"from": "gpt", "value": a}]} for q, a in QA
    ],
}


@pytest.mark.parametrize("kind", sorted(CHAT_ROWS))
def test_alpaca_chat_and_sharegpt_rows_equal_the_pair_rows(tiny_model, tmp_path, kind):
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text(jsonl([{"prompt": q, "target": a} for q, a in QA]))
    other = tmp_path / f"{kind}.jsonl"
    other.write_text(jsonl(CHAT_ROWS[kind]))
    _, expected = tokenize_rows(tiny_model, pairs)
    _, data = tokenize_rows(tiny_model, other)
    assert data["input_ids"] == expected["input_ids"]
    assert data["labels"] == expected["labels"]


def test_alpaca_input_and_system_fields():
    row = {"instruction": "Add.", "input": "1 + 2", "output": "3", "system": "Be brief."}
    assert row_to_messages(row) == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Add.\n\n1 + 2"},
        {"role": "assistant", "content": "3"},
    ]


def test_sharegpt_multi_turn_roles():
    row = {"conversations": [{"from": "system", "value": "S"}, {"from": "human", "value": "U1"},
                             {"from": "gpt", "value": "A1"}, {"from": "human", "value": "U2"},
                             {"from": "gpt", "value": "A2"}]}  # fmt: skip
    roles = [m["role"] for m in row_to_messages(row)]
    assert roles == ["system", "user", "assistant", "user", "assistant"]


def test_write_jsonl_roundtrip_is_atomic(tmp_path):
    path = write_jsonl([{"a": "é"}, {"a": 2}], tmp_path / "out" / "rows.jsonl")
    assert [r for _, r in iter_rows(path)] == [{"a": "é"}, {"a": 2}]
    assert sorted(p.name for p in path.parent.iterdir()) == ["rows.jsonl"]


# ---- bad input --------------------------------------------------------------------------------


def write(tmp_path: Path, name: str, text: str | bytes) -> Path:
    path = tmp_path / name
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


def error_of(model: str, path: Path, **flags) -> DataError:
    with pytest.raises(DataError) as info:
        run(
            TokenizeConfig(
                input_file=str(path), model=model, **{"prompt_key": "q", "target_key": "a", **flags}
            )
        )
    return info.value


def test_broken_json_line_names_file_and_row(tiny_model, tmp_path):
    path = write(tmp_path, "broken.jsonl", '{"q": "a", "a": "b"}\n\n{"q": "c", "a": \n')
    err = error_of(tiny_model, path)
    assert (err.path, err.row) == (str(path), 3)
    assert "broken.jsonl, row 3" in str(err) and "broken JSON" in str(err)


def test_broken_json_array_names_the_line(tiny_model, tmp_path):
    path = write(tmp_path, "broken_array.json", '[\n{"q": "a", "a": "b"},\n{"q": "c" "a": "d"}\n]')
    err = error_of(tiny_model, path)
    assert err.row == 3 and "broken JSON array" in str(err)


def test_missing_key_lists_the_row_fields(tiny_model, tmp_path):
    path = write(tmp_path, "keys.jsonl", jsonl([{"q": "a", "a": "b"}, {"question": "c", "answer": "d"}]))
    err = error_of(tiny_model, path)
    assert (err.row, err.field) == (2, "q")
    assert "['answer', 'question']" in str(err) and "--prompt_key" in str(err)


def test_missing_target_key_is_named(tiny_model, tmp_path):
    path = write(tmp_path, "target.jsonl", jsonl([{"q": "a", "answer": "b"}]))
    err = error_of(tiny_model, path)
    assert (err.row, err.field) == (1, "a") and "['answer', 'q']" in str(err)


def test_empty_target_names_row_and_field(tiny_model, tmp_path):
    path = write(tmp_path, "empty.csv", "q,a\nWhat is 1 + 2?,3\nWhat is 2 + 2?,  \n")
    err = error_of(tiny_model, path)
    assert (err.row, err.field) == (2, "a") and "is empty" in str(err)
    assert "empty.csv, row 2, field 'a'" in str(err)


def test_non_string_target_is_named(tiny_model, tmp_path):
    path = write(tmp_path, "nested.jsonl", jsonl([{"q": "x", "a": {"text": "y"}}]))
    err = error_of(tiny_model, path)
    assert (err.row, err.field) == (1, "a") and "must be a string" in str(err)


def test_bad_utf8_names_the_row(tiny_model, tmp_path):
    path = write(
        tmp_path, "latin1.jsonl", jsonl(PAIRS).encode() + '{"q": "café", "a": "b"}\n'.encode("latin-1")
    )
    err = error_of(tiny_model, path)
    assert err.row == 3 and "UTF-8" in str(err) and "latin1.jsonl" in str(err)


def test_missing_file_is_named(tiny_model, tmp_path):
    err = error_of(tiny_model, tmp_path / "nowhere.jsonl")
    assert "nowhere.jsonl" in str(err) and "does not exist" in str(err)


def test_unknown_file_type(tiny_model, tmp_path):
    err = error_of(tiny_model, write(tmp_path, "rows.txt", "q a"))
    assert ".txt" in str(err)


def test_row_that_is_not_an_object(tiny_model, tmp_path):
    err = error_of(tiny_model, write(tmp_path, "list.jsonl", jsonl(PAIRS) + "[1, 2]\n"))
    assert err.row == 3 and "not an object" in str(err)


def test_bad_chat_role_and_no_assistant_turn():
    with pytest.raises(DataError, match="row 4, field 'messages': turn 0 has role 'bot'"):
        row_to_messages({"messages": [{"role": "bot", "content": "x"}]}, path="f.jsonl", number=4)
    with pytest.raises(DataError, match="no non-empty assistant turn"):
        row_to_messages({"messages": [{"role": "user", "content": "x"}]}, path="f.jsonl", number=1)


def test_empty_file_is_an_error(tiny_model, tmp_path):
    err = error_of(tiny_model, write(tmp_path, "empty.jsonl", "\n"))
    assert "has no rows" in str(err)


def test_unknown_model_name_lists_builtins(tmp_path):
    path = write(tmp_path, "rows.jsonl", jsonl(PAIRS))
    with pytest.raises(ModelNotFoundError) as info:
        run(TokenizeConfig(input_file=str(path), model="no-such-model-xyz", prompt_key="q", target_key="a"))
    assert "no-such-model-xyz" in str(info.value) and "smollm2-135m-instruct" in str(info.value)


def test_model_folder_without_config(tmp_path):
    (tmp_path / "empty_model").mkdir()
    path = write(tmp_path, "rows.jsonl", jsonl(PAIRS))
    with pytest.raises(ModelNotFoundError, match="config.json"):
        run(
            TokenizeConfig(
                input_file=str(path), model=str(tmp_path / "empty_model"), prompt_key="q", target_key="a"
            )
        )
