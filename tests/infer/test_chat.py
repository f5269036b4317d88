"""Chat on the tiny model: a one-shot --message, and the REPL with injected input and output."""

from __future__ import annotations

import pytest

import llm_tuning.infer.chat as chat
from llm_tuning.infer.chat import ChatConfig


@pytest.fixture()
def prompts_seen(monkeypatch) -> list[str]:
    """Record every prompt the chat sends to `generate`."""
    seen: list[str] = []
    original = chat.generate

    def recording(model, tokenizer, prompts, *args, **kwargs):
        seen.extend(prompts)
        return original(model, tokenizer, prompts, *args, **kwargs)

    monkeypatch.setattr(chat, "generate", recording)
    return seen


def scripted(lines: list[str]):
    queue = list(lines)

    def read(prompt: str) -> str:
        assert prompt == "you> "
        if not queue:
            raise EOFError
        return queue.pop(0)

    return read


def test_one_message(tiny_model, prompts_seen):
    written: list[str] = []
    result = chat.run(ChatConfig(model=tiny_model, message="What is 1 + 2?", max_new_tokens=4, device="cpu"),
                      read=scripted([]), write=written.append)  # fmt: skip
    assert len(written) == 1
    assert [m["role"] for m in result.history] == ["user", "assistant"]
    assert result.history[1]["content"] == written[0]
    assert prompts_seen == ["<|im_start|>user\nWhat is 1 + 2?<|im_end|>\n<|im_start|>assistant\n"]


def test_repl_keeps_history_resets_and_exits(tiny_model, prompts_seen):
    written: list[str] = []
    lines = ["hi", "", "What is 9 x 8?", "/reset", "hello", "/exit", "never read"]
    result = chat.run(ChatConfig(model=tiny_model, max_new_tokens=3, device="cpu"), read=scripted(lines),
                      write=written.append)  # fmt: skip
    assert len(prompts_seen) == 3  # the empty line asks nothing; /exit stops before "never read"
    assert prompts_seen[1].startswith(
        "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"
    )  # history kept
    assert prompts_seen[1].endswith("<|im_start|>user\nWhat is 9 x 8?<|im_end|>\n<|im_start|>assistant\n")
    assert prompts_seen[2] == "<|im_start|>user\nhello<|im_end|>\n<|im_start|>assistant\n"  # after /reset
    assert "(history cleared)" in written
    assert sum(w.startswith("model> ") for w in written) == 3
    assert [m["content"] for m in result.history if m["role"] == "user"] == ["hello"]


def test_repl_ends_on_eof_and_trims_history(tiny_model, prompts_seen):
    cfg = ChatConfig(
        model=tiny_model, max_new_tokens=2, history_turns=1, system_prompt="Be brief.", device="cpu"
    )
    result = chat.run(cfg, read=scripted(["one", "two", "three"]), write=lambda _: None)
    assert len(result.history) == 6
    last = prompts_seen[-1]
    assert last.startswith("<|im_start|>system\nBe brief.<|im_end|>\n")
    assert "user\none" not in last and "user\ntwo" in last and "user\nthree" in last  # one earlier turn kept
