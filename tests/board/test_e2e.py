"""The whole loop in headless Chromium on a tiny model: choose a data file, train 3 steps, see the loss chart
and the adapter, chat with it, mix it with another adapter by the sliders and get an answer."""

from __future__ import annotations

import json

import pytest
import tiny_models
from chromium import AVAILABLE, Chromium
from live_server import start

from llm_tuning.board.app import BoardConfig, build_app

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not AVAILABLE, reason="headless Chromium is not installed (apt-get install chromium)"),
]


def js_set(element: str, value: str, event: str = "change") -> str:
    return (f"(() => {{ const e = {element}; e.value = {json.dumps(value)}; "
            f"e.dispatchEvent(new Event('{event}', {{bubbles: true}})); return true; }})()")  # fmt: skip


def choose_data(page) -> None:
    page.wait("[...document.querySelectorAll('#data-file option')].some(o => o.value === 'data/train.jsonl')")
    page.eval(js_set("$('data-model')", "tiny", "input"))
    page.eval(js_set("$('data-file')", "data/train.jsonl"))
    page.wait("[...$('data-prompt').options].some(o => o.value === 'q')")
    page.eval("$('data-prompt').value = 'q'; $('data-target').value = 'a'; previewData()")
    page.wait("document.querySelector('#data-samples .sample mark') !== null")
    summary = page.eval("$('data-summary').textContent")
    assert summary.startswith("12 rows; format pairs: 12; 0 bad"), summary
    assert page.eval("document.querySelector('#data-samples mark').textContent").startswith("0 + 0 = 0")
    page.eval("$('data-use').click()")


def train(page) -> dict:
    page.wait("$('train-form-data').value === 'data/train.jsonl' && $('train-form-prompt_key').value === 'q'")
    for name, value in (("max_steps", "3"), ("logging_steps", "1"), ("output_dir", "weights/run")):
        page.eval(js_set(f"$('train-form-{name}')", value, "input"))
    page.wait("$('train-command').textContent.includes('--max_steps 3')")
    command = page.eval("$('train-command').textContent")
    page.eval("$('train-start').click()")
    page.wait(
        "$('job-status') && ['done', 'failed'].includes($('job-status').textContent)", timeout=180, poll=0.5
    )
    return {"command": command, "status": page.eval("$('job-status').textContent"),
            "points": page.eval("document.querySelectorAll('svg.chart[data-key=loss] circle').length"),
            "adapter": page.eval("$('job-adapter')?.textContent"), "log": page.eval("document.querySelector('pre.log').textContent")}  # fmt: skip


def chat_and_mix(page) -> dict:
    page.eval("show('chat')")
    page.wait("document.querySelectorAll('#chat-adapters .adapter').length === 2")
    page.eval(js_set("$('chat-tokens')", "6", "input"))
    for i, weight in ((0, "0.7"), (1, "0.3")):
        page.eval(f"$('ad-{i}').checked = true")
        page.eval(js_set(f"$('w-{i}')", weight, "input"))
    page.eval("variants(); $('chat-prompt').value = 'What is 2 + 3?'; $('chat-compare').click()")
    page.wait(
        "document.querySelectorAll('#chat-answers .card').length === 4 || $('chat-error').textContent",
        timeout=60,
    )
    cards = page.eval("[...document.querySelectorAll('#chat-answers .card')].map(c => c.dataset.variant)")
    replies = {}
    for variant in ("weights_run", "mix"):
        page.eval(f"$('chat-variant').value = '{variant}'; $('chat-input').value = 'Hello'; send()")
        page.wait(
            f"!!document.querySelector('.msg.assistant[data-done=\"{variant}\"]') || $('chat-error').textContent",
            timeout=60,
        )
        replies[variant] = page.eval(
            f"document.querySelector('.msg.assistant[data-done=\"{variant}\"]')?.textContent"
        )
    return {"cards": cards, "replies": replies, "weights": page.eval("$('wv-0').textContent + ' ' + $('wv-1').textContent"),
            "error": page.eval("$('chat-error').textContent")}  # fmt: skip


def test_data_train_chat_mix_in_the_browser(workdir, tmp_path):
    tiny_models.random_adapter(
        str(workdir / "tiny"), workdir / "weights" / "other", 4, ["q_proj", "v_proj"], 3, alpha=4
    )
    url, server, thread = start(build_app(BoardConfig(workdir=str(workdir), model="tiny")))
    try:
        with Chromium(tmp_path / "profile") as browser:
            page = browser.open(url + "/#data")
            choose_data(page)
            run = train(page)
            page.eval("window.beforeReload = true; location.reload()")  # a reload reattaches to the run
            page.wait(
                "!window.beforeReload && typeof show === 'function' && $('job-status')?.textContent === 'done'"
            )
            chat = chat_and_mix(page)
    finally:
        server.should_exit = True
        thread.join(5)
    assert run["command"] == ("llm-tuning train --model tiny --data data/train.jsonl --prompt_key q --target_key a "
                              "--output_dir weights/run --max_steps 3 --logging_steps 1"), run["command"]  # fmt: skip
    assert run["status"] == "done" and run["points"] == 3, run["log"]
    assert (
        run["adapter"] == "adapter: weights/run"
        and (workdir / "weights/run/adapter_model.safetensors").is_file()
    )
    assert chat["error"] == "" and chat["cards"] == ["base", "weights_other", "weights_run", "mix"]
    assert chat["weights"] == "0.70 0.30"
    assert all(isinstance(r, str) and r for r in chat["replies"].values()), chat
