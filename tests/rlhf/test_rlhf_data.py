"""Preference and prompt rows: the accepted shapes, and bad rows reported with file, row and field."""

from __future__ import annotations

import json

import pytest

from llm_tuning.data.read import DataError
from llm_tuning.rlhf.common import PreferenceDataOptions, load_preference_splits
from llm_tuning.rlhf.data import encode_reply, preference_from_row, read_preferences, read_prompts

USER = {"role": "user", "content": "Hi?"}


def test_plain_chat_and_implicit_prompt_rows_give_the_same_pair():
    plain = preference_from_row({"prompt": "Hi?", "chosen": "Hello!", "rejected": "Go away."})
    chat = preference_from_row({"prompt": [USER], "chosen": [{"role": "assistant", "content": "Hello!"}],
                                "rejected": "Go away."})  # fmt: skip
    implicit = preference_from_row({"chosen": [USER, {"role": "assistant", "content": "Hello!"}],
                                    "rejected": [USER, {"role": "assistant", "content": "Go away."}]})  # fmt: skip
    messages = preference_from_row({"messages": [USER], "chosen": "Hello!", "rejected": "Go away."})
    for pair in (chat, implicit, messages):
        assert (pair.prompt, pair.chosen, pair.rejected) == (plain.prompt, plain.chosen, plain.rejected)
    assert plain.prompt == [USER]


@pytest.mark.parametrize(
    ("row", "field", "problem"),
    [
        ({"prompt": "Hi?", "chosen": "Same.", "rejected": " Same. "}, "rejected", "same text as chosen"),
        ({"prompt": "Hi?", "chosen": "", "rejected": "No."}, "chosen", "is empty"),
        ({"prompt": "Hi?", "chosen": "Yes.", "rejected": "   "}, "rejected", "is empty"),
        ({"prompt": "Hi?", "chosen": "Yes."}, "rejected", "is missing"),
        ({"chosen": "Yes.", "rejected": "No."}, "prompt", "is missing"),
        (
            {"prompt": "Hi?", "chosen": [{"role": "user", "content": "x"}], "rejected": "No."},
            "chosen",
            "assistant",
        ),
    ],
)
def test_bad_preference_rows_name_file_row_and_field(tmp_path, row, field, problem):
    path = tmp_path / "pairs.jsonl"
    good = {"prompt": "Hi?", "chosen": "Hello!", "rejected": "Go away."}
    path.write_text(json.dumps(good) + "\n" + json.dumps(row) + "\n", encoding="utf-8")
    with pytest.raises(DataError) as err:
        read_preferences(path)
    message = str(err.value)
    assert str(path) in message and "row 2" in message and repr(field) in message and problem in message


def test_csv_pairs_and_splits(tmp_path):
    path = tmp_path / "pairs.csv"
    lines = ["prompt,chosen,rejected"] + [f"q{i},good {i},bad {i}" for i in range(10)]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    opts = PreferenceDataOptions(data=str(path), eval_split=0.2, train_subset=5)
    train, held_out = load_preference_splits(opts, seed=1)
    assert len(train) == 5 and len(held_out) == 2
    assert not {p.row for p in train} & {p.row for p in held_out}


def test_prompt_rows_keep_other_fields_and_drop_trailing_replies(tmp_path):
    path = tmp_path / "prompts.jsonl"
    rows = [{"prompt": "What is 1 + 2?", "answer": 3},
            {"messages": [USER, {"role": "assistant", "content": "old reply"}], "answer": 5}]  # fmt: skip
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    first, second = read_prompts(path)
    assert first.fields == {"answer": 3} and first.prompt[-1]["content"] == "What is 1 + 2?"
    assert second.prompt == [USER]
    path.write_text(json.dumps({"question": "x"}) + "\n", encoding="utf-8")
    with pytest.raises(DataError, match="row 1.*'prompt'.*--prompt_key"):
        read_prompts(path)


def test_encode_reply_is_prompt_ids_then_reply_and_eos(tokenizer):
    ids = encode_reply(tokenizer, "<|im_start|>user\nHi<|im_end|>\n", "hello")
    assert ids[-1] == tokenizer.eos_token_id
    assert tokenizer.decode(ids) == "<|im_start|>user\nHi<|im_end|>\nhello<|im_end|>"
