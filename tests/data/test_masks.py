"""Loss masks against ids computed by hand from the ChatML text, piece by piece."""

from __future__ import annotations

import pytest

from llm_tuning.data.encode import IGNORE_INDEX, encode_segments, labels_for, mark_trained_span, truncate
from llm_tuning.data.formats import row_to_messages
from llm_tuning.data.template import conversation_segments, prompt_text

IM_START, IM_END = 1, 2  # the fixture tokenizer's special ids


def ids(tokenizer, text: str) -> list[int]:
    return tokenizer(text, add_special_tokens=False).input_ids


def encode(tokenizer, messages, template="chat", prompt_loss=False, system_prompt=None, bos_id=None):
    segments = conversation_segments(tokenizer, messages, template, system_prompt)
    [(input_ids, labels)] = encode_segments(tokenizer, [segments], prompt_loss, bos_id)
    return input_ids, labels


def pair(prompt: str, answer: str) -> list[dict]:
    return [{"role": "user", "content": prompt}, {"role": "assistant", "content": answer}]


def test_single_turn_masks_prompt_and_trains_answer_and_eos(tokenizer):
    input_ids, labels = encode(tokenizer, pair("What is 1 + 2?", "1 + 2 = 3"))

    prompt = ids(tokenizer, "<|im_start|>user\nWhat is 1 + 2?<|im_end|>\n<|im_start|>assistant\n")
    answer = ids(tokenizer, "1 + 2 = 3") + [IM_END]
    newline = ids(tokenizer, "\n")
    assert prompt[0] == IM_START and IM_END in prompt and len(newline) == 1
    assert input_ids == prompt + answer + newline
    assert labels == [IGNORE_INDEX] * len(prompt) + answer + [IGNORE_INDEX]
    assert labels[-2] == IM_END  # EOS trained
    assert labels[-1] == IGNORE_INDEX and input_ids[-1] == newline[0]  # the newline after EOS is not
    full = tokenizer.apply_chat_template(pair("What is 1 + 2?", "1 + 2 = 3"), tokenize=False)
    assert tokenizer.decode(input_ids) == full


def test_system_prompt_is_masked(tokenizer):
    input_ids, labels = encode(tokenizer, pair("hi", "hello"), system_prompt="Answer briefly.")
    system = ids(tokenizer, "<|im_start|>system\nAnswer briefly.<|im_end|>\n")
    assert input_ids[: len(system)] == system
    trained = [t for t, label in zip(input_ids, labels, strict=True) if label != IGNORE_INDEX]
    assert trained == ids(tokenizer, "hello") + [IM_END]


def test_multi_turn_messages_train_only_assistant_turns(tokenizer):
    row = {"messages": [
        {"role": "system", "content": "You are a helpful assistant."},
        {"role": "user", "content": "What is 9 x 8?"},
        {"role": "assistant", "content": "9 x 8 = 72"},
        {"role": "user", "content": "And 12 + 7?"},
        {"role": "assistant", "content": "12 + 7 = 19"},
    ]}  # fmt: skip
    input_ids, labels = encode(tokenizer, row_to_messages(row))

    text = (
        "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\nWhat is 9 x 8?<|im_end|>\n"
        "<|im_start|>assistant\n"
    )
    turn1 = ids(tokenizer, "9 x 8 = 72") + [IM_END]
    middle = ids(tokenizer, "\n<|im_start|>user\nAnd 12 + 7?<|im_end|>\n<|im_start|>assistant\n")
    turn2 = ids(tokenizer, "12 + 7 = 19") + [IM_END]
    expected = ids(tokenizer, text) + turn1 + middle + turn2 + ids(tokenizer, "\n")
    assert input_ids == expected
    masked = [IGNORE_INDEX]
    assert labels == (masked * len(ids(tokenizer, text)) + turn1 + masked * len(middle) + turn2 + masked)
    assert mark_trained_span(tokenizer, input_ids, labels).count("[[") == 2


def test_prompt_loss_trains_every_token(tokenizer):
    input_ids, labels = encode(tokenizer, pair("What is 1 + 2?", "1 + 2 = 3"), prompt_loss=True)
    assert labels == input_ids
    assert IGNORE_INDEX not in labels


def test_template_none_is_raw_concatenation_plus_eos(tokenizer):
    input_ids, labels = encode(tokenizer, pair("What is 1 + 2?", "1 + 2 = 3"), template="none")
    prompt = ids(tokenizer, "What is 1 + 2?")
    answer = ids(tokenizer, "1 + 2 = 3") + [IM_END]
    assert input_ids == prompt + answer
    assert labels == [IGNORE_INDEX] * len(prompt) + answer
    assert IM_START not in input_ids  # no chat markers


def test_template_none_joins_system_and_user_with_a_newline(tokenizer):
    messages = [{"role": "system", "content": "Answer briefly."}, *pair("hi", "hello")]
    segments = conversation_segments(tokenizer, messages, "none")
    assert segments == [("Answer briefly.", False), ("\nhi", False), ("hello<|im_end|>", True)]


def test_bos_is_prepended_untrained(tokenizer):
    input_ids, labels = encode(tokenizer, pair("hi", "hello"), template="none", bos_id=IM_START)
    assert input_ids[0] == IM_START and labels[0] == IGNORE_INDEX
    _, labels_all = encode(tokenizer, pair("hi", "hello"), template="none", prompt_loss=True, bos_id=IM_START)
    assert labels_all[0] == IM_START


def test_prompt_text_matches_the_masked_training_prefix(tokenizer):
    """What predict asks is exactly the untrained prefix the model saw in training."""
    messages = pair("What is 1 + 2?", "1 + 2 = 3")
    segments = conversation_segments(tokenizer, messages)
    assert prompt_text(tokenizer, messages[:1]) == segments[0][0]
    assert not segments[0][1]


def test_labels_for_and_truncate_by_hand():
    input_ids, labels = labels_for([[5, 6], [7, 8, 2], [9]], [False, True, False], prompt_loss=False)
    assert input_ids == [5, 6, 7, 8, 2, 9]
    assert labels == [-100, -100, 7, 8, 2, -100]
    cut = truncate(input_ids, labels, 4)
    assert (cut.input_ids, cut.labels, cut.truncated) == ([5, 6, 7, 8], [-100, -100, 7, 8], True)
    assert not truncate(input_ids, labels, 6).truncated


def test_template_needed_for_chat(tokenizer, monkeypatch):
    monkeypatch.setattr(tokenizer, "chat_template", None)
    with pytest.raises(ValueError, match="--template none"):
        conversation_segments(tokenizer, pair("hi", "hello"))
