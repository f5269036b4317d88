"""The chat-and-mix tab's model: one base model with the chosen adapters loaded, and their weighted mix.

    pool = ChatPool(); pool.select("smollm2-135m-instruct", [("weights/a", 0.7), ("weights/b", 0.3)])
    pool.compare("What is 2 + 3?")       -> {"base": ..., "weights_a": ..., "weights_b": ..., "mix": ...}

The same code the CLI uses: `compare.variant_model` loads every adapter under its own name and adds the mix
(`cat`: exact, as `compare` and `serve` default to); moving a slider only re-mixes, it does not reload. One
generation runs at a time (adapter switching is not thread-safe); the web routes call this in threads.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from llm_tuning.data.formats import Message
from llm_tuning.data.template import prompt_text
from llm_tuning.models.adapters import BASE, MIX, AdapterSpec, mix_adapters, needs_mix, use_adapter
from llm_tuning.models.generate import GenerationOptions, generate

METHOD = "cat"


def adapter_name(path: str) -> str:
    """A name PEFT accepts, from the adapter's path under the working folder (weights/a -> weights_a)."""
    return re.sub(r"\W", "_", path.strip("/")) or "adapter"


class ChatPool:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.key: tuple | None = None
        self.weights: tuple | None = None
        self.model: Any = None
        self.tokenizer: Any = None
        self.names: list[str] = []

    def select(self, model: str, adapters: list[tuple[str, str, float]]) -> list[str]:
        """Load `model` with `adapters` ([(name, folder, weight)]) unless already loaded; re-mix on new weights.
        The variants to answer with: base, each adapter, and their mix (two or more, or one weighted)."""
        with self.lock:  # not while another request generates with the adapters this would change
            return self._select(model, [AdapterSpec(n, f, w) for n, f, w in adapters])

    def _select(self, model: str, specs: list[AdapterSpec]) -> list[str]:
        from llm_tuning.infer.compare import variant_model
        from llm_tuning.models.load import load_model, load_tokenizer

        key = (model, tuple((s.name, s.path) for s in specs))
        weights = tuple(s.weight for s in specs)
        if key != self.key:
            self.key, self.model, self.weights = None, None, None  # a failed load leaves nothing half-set
            base = load_model(model, device="cpu" if not _gpu() else "auto")
            self.tokenizer = load_tokenizer(model)
            if specs:
                self.model, self.names = variant_model(base, specs, METHOD, None)
            else:
                self.model, self.names = base, [BASE]
            self.key, self.weights = key, weights
        elif weights != self.weights:  # a slider moved: only the mix changes
            if MIX in self.model.peft_config:
                self.model.set_adapter(specs[0].name)  # PEFT warns when the active adapter is deleted
                self.model.delete_adapter(MIX)
                self.names.remove(MIX)
            if needs_mix(specs):  # two or more, or one at a weight other than 1
                mix_adapters(self.model, specs, METHOD, None, MIX)
                self.names.append(MIX)
            self.weights = weights
        return list(self.names)

    def _prompt(self, messages: list[Message], system_prompt: str | None) -> str:
        return prompt_text(self.tokenizer, messages, "chat", system_prompt)

    def answer(
        self, name: str, messages: list[Message], opts: GenerationOptions, system: str | None = None
    ) -> str:
        with self.lock, use_adapter(self.model, name):
            return generate(self.model, self.tokenizer, [self._prompt(messages, system)], opts)[0].text

    def compare(self, prompt: str, opts: GenerationOptions, system: str | None = None) -> dict[str, str]:
        """The same prompt answered by every variant, as `llm-tuning compare` does for a file."""
        messages = [{"role": "user", "content": prompt}]
        return {name: self.answer(name, messages, opts, system) for name in self.names}

    def stream(self, name: str, messages: list[Message], opts: GenerationOptions,
               system: str | None = None) -> Iterator[str]:  # fmt: skip
        """The reply of variant `name`, piece by piece as it is generated."""
        from transformers import TextIteratorStreamer

        streamer = TextIteratorStreamer(
            self.tokenizer, skip_prompt=True, skip_special_tokens=True, timeout=600
        )
        prompt = self._prompt(messages, system)
        failure: list[BaseException] = []

        def work() -> None:
            try:
                with self.lock, use_adapter(self.model, name):
                    generate(self.model, self.tokenizer, [prompt], opts, streamer=streamer)
            except BaseException as err:  # shown to the user at the end of the stream
                failure.append(err)
                streamer.end()

        threading.Thread(target=work, name="board-chat", daemon=True).start()
        yield from (piece for piece in streamer if piece)
        if failure:
            raise failure[0]


def _gpu() -> bool:
    import torch

    return torch.cuda.is_available()


def resolve_model(workdir: Path, model: str) -> str:
    """A model folder under the working folder as an absolute path; otherwise the name as given (built-in)."""
    from llm_tuning.board.paths import inside

    candidate = Path(model)
    if candidate.is_absolute() or ".." in candidate.parts or (workdir / model).exists():
        return str(inside(workdir, model))
    return model
