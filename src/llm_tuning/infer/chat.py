"""Talk to a model, with or without adapters: an interactive multi-turn REPL, or one `--message`.

    llm-tuning chat --adapter weights/simple_math_4op
    llm-tuning chat --adapter weights/simple_math_4op --message "What is 12 x 7?"
    llm-tuning chat --adapter math=weights/math --adapter style=weights/style --mix math:0.7+style:0.3

In the REPL, `/reset` clears the history and `/exit` (or Ctrl-D) leaves.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from llm_tuning.config import ConfigError, check_positive, option, validate_groups
from llm_tuning.data.formats import Message
from llm_tuning.data.template import prompt_text
from llm_tuning.infer.predict import InferenceOptions, load_for_inference
from llm_tuning.models.adapters import check_mix_options, use_adapter
from llm_tuning.models.generate import generate


@dataclass
class ChatConfig(InferenceOptions):
    """Chat with a model in the terminal."""

    message: str | None = option(None, "answer this one message and exit")
    history_turns: int = option(10, "user/assistant pairs kept as context")

    def __post_init__(self) -> None:
        validate_groups(self)
        check_positive("history_turns", self.history_turns, allow_zero=True)
        check_mix_options(self.mix_method, self.mix_density)
        if len(self.mix) > 1:
            raise ConfigError(f"--mix is given {len(self.mix)} times; chat answers with one: give one --mix")


@dataclass
class ChatResult:
    history: list[Message] = field(default_factory=list)


def reply(model: Any, tokenizer: Any, history: list[Message], message: str, cfg: ChatConfig) -> str:
    """The model's answer to `message` after `history`; appends both turns to `history`."""
    history.append({"role": "user", "content": message})
    context = history[-(2 * cfg.history_turns + 1) :]
    prompt = prompt_text(tokenizer, context, cfg.template, cfg.system_prompt)
    answer = generate(model, tokenizer, [prompt], cfg, add_special_tokens=cfg.template == "none")[0].text
    history.append({"role": "assistant", "content": answer})
    return answer


def run(
    cfg: ChatConfig, read: Callable[[str], str] = input, write: Callable[[str], None] = print
) -> ChatResult:
    model, tokenizer, mix = load_for_inference(cfg)
    with use_adapter(model, mix) if mix else contextlib.nullcontext():
        return _talk(model, tokenizer, cfg, read, write)


def _talk(model: Any, tokenizer: Any, cfg: ChatConfig, read: Callable[[str], str],
          write: Callable[[str], None]) -> ChatResult:  # fmt: skip
    history: list[Message] = []
    if cfg.message is not None:
        write(reply(model, tokenizer, history, cfg.message, cfg))
        return ChatResult(history)
    write("Chat with the model. /reset clears the history, /exit leaves.")
    while True:
        try:
            message = read("you> ").strip()
        except (EOFError, KeyboardInterrupt):
            write("")
            break
        if message in ("/exit", "/quit"):
            break
        if message == "/reset":
            history.clear()
            write("(history cleared)")
            continue
        if message:
            write("model> " + reply(model, tokenizer, history, message, cfg))
    return ChatResult(history)
