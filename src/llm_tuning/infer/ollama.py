"""An Ollama `Modelfile` for an exported GGUF: FROM, TEMPLATE (Go) translated from the chat template, stops.

    llm-tuning export --adapter weights/math --format ollama --output out/math.gguf
    ollama create math -f out/Modelfile

Ollama templates are Go templates, Hugging Face's are Jinja; no general translation exists. A template is
recognised by what it renders, not by its text: a short conversation is rendered with the model's own
Jinja template and compared with what ChatML or Llama-2 `[INST]` formatting gives for the same messages
(with and without a system message). When one matches exactly, its Go template is written, with the
template's default system prompt (if it adds one) as SYSTEM. Otherwise the Modelfile has no TEMPLATE and
says so in a comment: Ollama then falls back on the template it recognises from the GGUF's
`tokenizer.chat_template` (or sends the raw prompt), and the user should write TEMPLATE by hand.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

logger = logging.getLogger(__name__)

SAMPLE = [
    {"role": "user", "content": "Hi there"},
    {"role": "assistant", "content": "Hello! How can I help?"},
    {"role": "user", "content": "What is 2 + 2?"},
]
SYSTEM_PROBE = "You answer in one word."

CHATML_GO = """{{- if .System }}<|im_start|>system
{{ .System }}<|im_end|>
{{ end }}
{{- range $i, $_ := .Messages }}
{{- $last := eq (len (slice $.Messages $i)) 1 }}
{{- if eq .Role "user" }}<|im_start|>user
{{ .Content }}<|im_end|>
{{ else if eq .Role "assistant" }}<|im_start|>assistant
{{ .Content }}{{ if not $last }}<|im_end|>
{{ end }}
{{- end }}
{{- if and (ne .Role "assistant") $last }}<|im_start|>assistant
{{ end }}
{{- end }}"""

LLAMA2_GO = """{{- $first := true }}
{{- range .Messages }}
{{- if eq .Role "user" }}[INST] {{ if and $first $.System }}<<SYS>>
{{ $.System }}
<</SYS>>

{{ end }}{{ .Content }} [/INST]
{{- $first = false }}
{{- else if eq .Role "assistant" }} {{ .Content }} </s><s>
{{- end }}
{{- end }}"""


@dataclass
class OllamaTemplate:
    style: str  # chatml, llama2 or none
    template: str | None
    system: str | None
    stops: list[str]


def render_chatml(messages: list[dict], system: str | None) -> str:
    text = f"<|im_start|>system\n{system}<|im_end|>\n" if system else ""
    for message in messages:
        text += f"<|im_start|>{message['role']}\n{message['content']}<|im_end|>\n"
    return text + "<|im_start|>assistant\n"


def render_llama2(messages: list[dict], system: str | None, bos: str, eos: str) -> str:
    text = ""
    for index, message in enumerate(messages):
        content = message["content"]
        if message["role"] == "user":
            if index == 0 and system:
                content = f"<<SYS>>\n{system}\n<</SYS>>\n\n{content}"
            text += f"{bos}[INST] {content} [/INST]"
        else:
            text += f" {content} {eos}"
    return text


def _render(tokenizer: Any, messages: list[dict]) -> str | None:
    try:
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    except Exception as err:  # a template may refuse roles or orders; then it is simply not recognised
        logger.debug("chat template refused the probe: %s", err)
        return None


def _default_system(tokenizer: Any) -> str | None:
    """The system prompt the template inserts when the conversation has none (ChatML only)."""
    text = _render(tokenizer, SAMPLE[:1]) or ""
    head = "<|im_start|>system\n"
    return (
        text[len(head) : text.index("<|im_end|>")] if text.startswith(head) and "<|im_end|>" in text else None
    )


def translate_template(tokenizer: Any) -> OllamaTemplate:
    """The Go template equivalent to the tokenizer's chat template, checked by rendering both."""
    if not getattr(tokenizer, "chat_template", None):
        return OllamaTemplate("none", None, None, [])
    with_system = [{"role": "system", "content": SYSTEM_PROBE}, *SAMPLE]
    default = _default_system(tokenizer)
    if _render(tokenizer, with_system) == render_chatml(SAMPLE, SYSTEM_PROBE) and _render(
        tokenizer, SAMPLE
    ) == render_chatml(SAMPLE, default):
        return OllamaTemplate("chatml", CHATML_GO, default, ["<|im_start|>", "<|im_end|>"])
    bos, eos = tokenizer.bos_token or "", tokenizer.eos_token or ""
    if _render(tokenizer, with_system) == render_llama2(SAMPLE, SYSTEM_PROBE, bos, eos) and _render(
        tokenizer, SAMPLE
    ) == render_llama2(SAMPLE, None, bos, eos):
        return OllamaTemplate("llama2", LLAMA2_GO, None, ["[INST]", eos] if eos else ["[INST]"])
    return OllamaTemplate("none", None, None, [tokenizer.eos_token] if tokenizer.eos_token else [])


def _quoted(text: str) -> str:
    if '"""' in text:
        raise ValueError('a template or system prompt holding """ cannot be written into a Modelfile')
    return f'"""{text}"""'


def modelfile_text(gguf_name: str, tokenizer: Any, source: str) -> tuple[str, str]:
    """(Modelfile text, template style) for the GGUF file `gguf_name` in the same folder."""
    found = translate_template(tokenizer)
    lines = [f"# Written by llm-tuning export ({source}). Create the model with: ollama create NAME -f Modelfile",
             f"FROM ./{gguf_name}"]  # fmt: skip
    if found.template:
        lines.append(f"# TEMPLATE: the chat template recognised as {found.style} (checked by rendering)")
        lines.append(f"TEMPLATE {_quoted(found.template)}")
    else:
        logger.warning("the chat template is neither ChatML nor Llama-2 [INST]: the Modelfile has no TEMPLATE; "
                       "Ollama uses one it recognises from the GGUF's chat template, or raw prompts")  # fmt: skip
        lines.append(
            "# No TEMPLATE: the chat template is not one llm-tuning can translate (ChatML, Llama-2)."
        )
        lines.append(
            "# Ollama picks a template it recognises from the GGUF's tokenizer.chat_template, else it"
        )
        lines.append("# sends raw prompts; write a TEMPLATE (Go syntax) here for chat use.")
    if found.system:
        lines.append(f"SYSTEM {_quoted(found.system)}")
    lines += [f'PARAMETER stop "{stop}"' for stop in dict.fromkeys(found.stops) if '"' not in stop]
    return "\n".join(lines) + "\n", found.style
