"""Render conversations with the model's chat template, split into trained and untrained spans.

`conversation_segments` returns [(text, trained), ...] whose concatenation is the training text:
the assistant replies (each ending in EOS) are trained, everything else (system, user turns, the
template's role markers) is not. `prompt_text` renders the same prompt for generation, so what is
asked at inference time is exactly what was masked at training time.
"""

from __future__ import annotations

from typing import Any

from llm_tuning.data.formats import Message

Segment = tuple[str, bool]


def has_chat_template(tokenizer: Any) -> bool:
    return bool(getattr(tokenizer, "chat_template", None))


def with_system(messages: list[Message], system_prompt: str | None) -> list[Message]:
    if system_prompt and (not messages or messages[0]["role"] != "system"):
        return [{"role": "system", "content": system_prompt}, *messages]
    return messages


def _render(tokenizer: Any, messages: list[Message], add_generation_prompt: bool) -> str:
    return tokenizer.apply_chat_template(
        messages, tokenize=False, add_generation_prompt=add_generation_prompt
    )


def _raw_segments(messages: list[Message], eos: str) -> list[Segment]:
    """The original's concatenation for base models: prompt text, then the answer and EOS."""
    segments: list[Segment] = []
    for m in messages:
        if m["role"] == "assistant":
            segments.append((m["content"] + eos, True))
        else:
            sep = "\n" if segments and not segments[-1][1] else ""
            segments.append((sep + m["content"], False))
    return segments


def conversation_segments(
    tokenizer: Any, messages: list[Message], template: str = "chat", system_prompt: str | None = None
) -> list[Segment]:
    """[(text, trained)] for a conversation; every assistant turn is trained and ends with EOS."""
    eos = tokenizer.eos_token or ""
    if template == "none":
        return _raw_segments(messages, eos)
    if not has_chat_template(tokenizer):
        raise ValueError("the tokenizer has no chat template: pass --template none to train on raw text")
    messages = with_system(messages, system_prompt)
    segments: list[Segment] = []
    done = ""  # the text already covered by segments
    for i, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        prefix = _render(tokenizer, messages[:i], add_generation_prompt=True)
        full = _render(tokenizer, messages[: i + 1], add_generation_prompt=False)
        if not (prefix.startswith(done) and full.startswith(prefix)):
            raise ValueError(
                "the chat template rewrites earlier turns (e.g. strips reasoning), so turns cannot be "
                "masked one by one; train single-turn rows or pass --template none"
            )
        segments.append((prefix[len(done) :], False))
        answer = full[len(prefix) :]
        cut = answer.find(eos) if eos else -1
        if cut >= 0:  # the template's text after EOS (often a newline) is not trained
            segments.append((answer[: cut + len(eos)], True))
            if answer[cut + len(eos) :]:
                segments.append((answer[cut + len(eos) :], False))
        else:
            segments.append((answer + eos, True))
        done = full
    return [(text, trained) for text, trained in segments if text]


def prompt_segments(
    tokenizer: Any, messages: list[Message], template: str = "chat", system_prompt: str | None = None
) -> list[str]:
    """The prompt for the last user turn of `messages`, in the pieces training tokenizes one by one: the
    chat template's rendering, or for `--template none` the raw turns exactly as training joins them
    (`\n` between prompt turns, earlier answers with EOS, nothing after the last turn)."""
    if template == "none":
        return [text for text, _ in _raw_segments(messages, tokenizer.eos_token or "")]
    if not has_chat_template(tokenizer):
        raise ValueError("the tokenizer has no chat template: pass --template none for a base model")
    return [_render(tokenizer, with_system(messages, system_prompt), add_generation_prompt=True)]


def prompt_text(
    tokenizer: Any, messages: list[Message], template: str = "chat", system_prompt: str | None = None
) -> str:
    """The text a model is given to answer the last user turn of `messages` (the one place every command
    builds it: predict, chat, serve, RLHF rollouts); tokenize it with special tokens for `--template none`."""
    return "".join(prompt_segments(tokenizer, messages, template, system_prompt))


def adds_bos(tokenizer: Any) -> bool:
    """Whether the tokenizer puts BOS in front of plain text (raw-text rows need it then)."""
    bos = tokenizer.bos_token_id
    return bos is not None and tokenizer("a").input_ids[:1] == [bos]
