"""`--template none`: the prompt that serve and chat give the model is token for token the one `tokenize` trained
(no extra "\\n", the same BOS, multi-turn history joined the same way)."""

from __future__ import annotations

import json
import shutil

import httpx
import pytest
from test_server import start

from llm_tuning.data.encode import IGNORE_INDEX, prompt_ids
from llm_tuning.data.tokenize import TokenizeConfig, encode_rows
from llm_tuning.infer import chat
from llm_tuning.infer.engine import Job
from llm_tuning.infer.openai_api import ChatRequest, CompletionRequest
from llm_tuning.infer.server import ServeConfig, build_app, build_engine
from llm_tuning.models.generate import Generated
from llm_tuning.models.load import load_tokenizer

TURNS = [
    {"role": "user", "content": "What is 12 + 7?"},
    {"role": "assistant", "content": "12 + 7 = 19"},
    {"role": "user", "content": "What is 9 x 8?"},
]


@pytest.fixture(scope="module", params=["no_bos", "bos"])
def model_dir(request, tiny_model, tmp_path_factory) -> str:
    """The tiny model as is (its tokenizer adds nothing), and with a tokenizer that puts BOS first."""
    if request.param == "no_bos":
        return tiny_model
    from tokenizers import processors

    folder = tmp_path_factory.mktemp("tiny-bos")
    shutil.copytree(tiny_model, folder, dirs_exist_ok=True)
    tokenizer = load_tokenizer(str(folder))
    bos = tokenizer.bos_token
    tokenizer._tokenizer.post_processor = processors.TemplateProcessing(
        single=f"{bos} $A", pair=f"{bos} $A $B", special_tokens=[(bos, tokenizer.bos_token_id)]
    )
    tokenizer.save_pretrained(folder)
    assert load_tokenizer(str(folder))("hello").input_ids[0] == tokenizer.bos_token_id
    return str(folder)


def trained_prompt(model: str, messages: list[dict], tmp_path) -> list[int]:
    """The ids `tokenize --template none` puts before the row's last answer."""
    source = tmp_path / "rows.jsonl"
    row = {"messages": [*messages, {"role": "assistant", "content": "the answer"}]}
    source.write_text(json.dumps(row) + "\n", encoding="utf-8")
    cfg = TokenizeConfig(input_file=str(source), model=model, template="none", num_proc=1)
    chunk = encode_rows(cfg, source, load_tokenizer(model), [(1, row)])
    ids, labels = chunk.ids.tolist(), chunk.labels.tolist()
    last_answer = max(
        i for i in range(1, len(ids)) if labels[i] != IGNORE_INDEX and labels[i - 1] == IGNORE_INDEX
    )
    return ids[:last_answer]


class RecordPrompt:
    """Stands in for generate() in `chat`: records the prompt's ids as generate() would tokenize them."""

    def __init__(self) -> None:
        self.ids: list[list[int]] = []

    def __call__(self, model, tokenizer, prompts, cfg, add_special_tokens=False) -> list[Generated]:
        self.ids.append(tokenizer(prompts[0], add_special_tokens=add_special_tokens).input_ids)
        return [Generated("x", 1, len(self.ids[-1]))]


def test_served_and_chat_prompts_equal_the_trained_prompt(model_dir, tmp_path, monkeypatch):
    tokenizer = load_tokenizer(model_dir)
    engine = build_engine(ServeConfig(model=model_dir, template="none", served_name="tiny"))
    for messages in (TURNS[:1], TURNS):
        trained = trained_prompt(model_dir, messages, tmp_path)
        assert prompt_ids(tokenizer, messages, "none") == trained
        assert engine.chat_job(ChatRequest(model="tiny", messages=messages)).input_ids == trained
        fake = RecordPrompt()
        monkeypatch.setattr(chat, "generate", fake)
        chat.reply(None, tokenizer, [dict(m) for m in messages[:-1]], messages[-1]["content"],
                   chat.ChatConfig(model=model_dir, template="none"))  # fmt: skip
        assert fake.ids == [trained]
    completion = engine.completion_job(CompletionRequest(model="tiny", prompt=TURNS[0]["content"]))
    assert completion.input_ids == trained_prompt(model_dir, TURNS[:1], tmp_path)

    url, server, thread = start(build_app(engine))
    try:  # over HTTP: the same prompt length, and the greedy reply to exactly the trained ids
        reply = httpx.post(url + "/v1/chat/completions", timeout=60,
                           json={"model": "tiny", "messages": TURNS, "max_tokens": 8, "temperature": 0}).json()  # fmt: skip
    finally:
        server.should_exit = True
        thread.join(5)
    trained = trained_prompt(model_dir, TURNS, tmp_path)
    assert reply["usage"]["prompt_tokens"] == len(trained)
    expected = engine.complete(
        Job("tiny", None, trained, 8, 0.0, 1.0, None, [])
    )  # greedy from the trained ids
    assert reply["choices"][0]["message"]["content"] == expected.text
