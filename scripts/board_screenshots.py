"""Screenshots of each tab of `llm-tuning board`, on the embedded SmolLM2-135M, taken by headless Chromium.

    PYTHONPATH=src python scripts/board_screenshots.py            # -> docs/board_{data,train,eval,chat,sde}.png

A real, short loop in bench_out/board/ (the working folder): the demo's arithmetic data and adapter
(outputs/demo, from `make demo`) are copied in; the Train tab trains a few steps, the Evaluate tab runs
`eval` on the demo's adapter and the new one, the SDE tab shows a two-design grid (`sde run`, 3 steps per
design, on generated MASA reviews), and Chat & mix compares base, both adapters and their slider mix.
Needs Debian's chromium; takes several minutes on 2 CPU cores.
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))  # the DevTools driver the board's browser tests use

from chromium import Chromium  # noqa: E402

logger = logging.getLogger("board_screenshots")


def setup(work: Path, demo: Path) -> None:
    from llm_tuning.data.read import write_jsonl
    from llm_tuning.sde.synthetic import make_masa_rows

    if work.exists():
        shutil.rmtree(work)  # bench_out/board is this script's own folder
    (work / "data").mkdir(parents=True)
    for name in ("arithmetic_train.jsonl", "arithmetic_test.jsonl"):
        shutil.copy(demo / name, work / "data" / name)
    shutil.copytree(
        demo / "adapter", work / "weights" / "demo", ignore=shutil.ignore_patterns("checkpoint-*", "runs")
    )
    write_jsonl(make_masa_rows(40, "masa_en", seed=0), work / "data" / "masa_reviews.jsonl")


def serve(app) -> tuple[str, object]:
    import socket

    import uvicorn

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    threading.Thread(target=server.run, daemon=True).start()
    while not server.started:
        time.sleep(0.05)
    return f"http://127.0.0.1:{port}", server


def shrink(path: Path) -> None:
    """A 256-colour PNG: a page of flat colours loses nothing visible and shrinks ~3x."""
    from PIL import Image

    Image.open(path).convert("RGB").quantize(256).save(path, optimize=True)


def set_value(page, element: str, value: str, event: str = "input") -> None:
    page.eval(f"(() => {{ const e = {element}; e.value = {json.dumps(value)}; "
              f"e.dispatchEvent(new Event('{event}', {{bubbles: true}})); return 1; }})()")  # fmt: skip


def wait_job(page, timeout: float) -> str:
    status = page.wait("$('job-status') && !['running', 'queued'].includes($('job-status').textContent) "
                       "&& $('job-status').textContent", timeout=timeout, poll=1)  # fmt: skip
    logger.info("job: %s", status)
    return status


def start_job(page, command: str, values: dict) -> None:
    page.eval(
        f"api('/api/jobs', {json.dumps({'command': command, 'values': values, 'label': command})}).then(r => selectJob(r.id))"
    )
    page.wait("$('job-status') && $('job-status').textContent === 'running'", timeout=60)


def data_tab(page, docs: Path) -> None:
    page.eval("show('data')")
    page.wait("[...$('data-file').options].some(o => o.value === 'data/arithmetic_train.jsonl')")
    time.sleep(2)  # the tab's own file list refresh first, or it would reset the choice
    set_value(page, "$('data-file')", "data/arithmetic_train.jsonl", "change")
    page.wait(
        "$('data-file').value === 'data/arithmetic_train.jsonl' && $('data-summary').textContent.startsWith('960 rows')",
        timeout=120,
    )
    page.screenshot(docs / "board_data.png")
    page.eval("$('data-use').click()")
    page.wait("$('train-form-data').value === 'data/arithmetic_train.jsonl'")


def train_tab(page, docs: Path, steps: int) -> None:
    for name, value in (("max_steps", str(steps)), ("logging_steps", "1"), ("learning_rate", "0.001"),
                        ("lora_rank", "16"), ("output_dir", "weights/board-run")):  # fmt: skip
        set_value(page, f"$('train-form-{name}')", value)
    page.wait("$('train-command').textContent.includes('--max_steps')")
    page.eval("$('train-start').click()")
    page.wait("$('job-status') && $('job-status').textContent === 'running'", timeout=60)
    page.wait("document.querySelectorAll('svg.chart[data-key=loss] circle').length >= 2", timeout=600, poll=1)
    page.screenshot(docs / "board_train_running.png")  # progress, ETA and the live chart mid-run
    assert wait_job(page, 900) == "done"
    page.screenshot(docs / "board_train.png")


def eval_tab(page, docs: Path) -> None:
    page.eval("show('eval')")
    values = {"data_path": "data/arithmetic_test.jsonl", "adapter": ["demo=weights/demo", "run=weights/board-run"],
              "output_dir": "evals/arithmetic", "limit": "12", "max_new_tokens": "16", "metrics": "exact_match,token_f1"}  # fmt: skip
    page.eval(f"setFormValues('eval-form', {json.dumps(values)})")
    page.wait("$('eval-command').textContent.includes('evals/arithmetic')")
    page.eval("$('eval-start').click()")
    page.wait("$('job-status') && $('job-status').textContent === 'running'", timeout=60)
    assert wait_job(page, 900) == "done"
    page.wait("!!$('eval-chart')", timeout=30)
    page.screenshot(docs / "board_eval.png")


def sde_tab(page, docs: Path) -> None:
    values = {"task": "masa_en", "data": "data/masa_reviews.jsonl", "designs": "inst_last,no_inst", "train_size": "16",
              "test_size": "6", "max_steps": "3", "batch_size": "4", "max_new_tokens": "40", "output_dir": "outputs/sde"}  # fmt: skip
    start_job(page, "sde run", values)
    assert wait_job(page, 1800) == "done"
    page.eval("show('sde')")
    page.wait("[...$('sde-report').options].some(o => o.value === 'outputs/sde')")
    set_value(page, "$('sde-report')", "outputs/sde", "change")
    page.wait("!!document.querySelector('button.pred')", timeout=30)
    page.eval("document.querySelector('button.pred').click()")
    page.wait("!!document.querySelector('#sde-rows table')")
    time.sleep(1)
    page.screenshot(docs / "board_sde.png", full_page=True)


def chat_tab(page, docs: Path) -> None:
    page.eval("show('chat')")
    page.wait("document.querySelectorAll('#chat-adapters .adapter').length === 2")
    set_value(page, "$('chat-tokens')", "24")
    for i, weight in ((0, "0.4"), (1, "0.8")):
        page.eval(f"$('ad-{i}').checked = true")
        set_value(page, f"$('w-{i}')", weight)
    page.eval("variants(); $('chat-prompt').value = 'What is 23 + 58?'; $('chat-compare').click()")
    page.wait(
        "document.querySelectorAll('#chat-answers .card').length === 4 || $('chat-error').textContent",
        timeout=600,
        poll=1,
    )
    page.eval("$('chat-variant').value = 'mix'; $('chat-input').value = 'What is 7 x 8?'; send()")
    page.wait(
        "!!document.querySelector('.msg.assistant[data-done]') || $('chat-error').textContent",
        timeout=300,
        poll=1,
    )
    set_value(page, "$('save-output')", "weights/my-mix")
    page.screenshot(docs / "board_chat.png", full_page=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--demo", default=str(ROOT / "outputs" / "demo"), help="make demo's output folder")
    parser.add_argument("--work", default=str(ROOT / "bench_out" / "board"))
    parser.add_argument("--docs", default=str(ROOT / "docs"))
    parser.add_argument("--steps", type=int, default=6)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    from llm_tuning.board.app import BoardConfig, build_app

    work, docs = Path(args.work), Path(args.docs)
    setup(work, Path(args.demo))
    url, server = serve(build_app(BoardConfig(workdir=str(work))))
    shots = docs / ".shots"
    shots.mkdir(parents=True, exist_ok=True)
    try:
        with Chromium(work.parent / "board-profile", width=1280, height=860) as browser:
            page = browser.open(url + "/#data")
            page.wait("!!document.querySelector('#train-form details')", timeout=60)
            for step in (data_tab, lambda p, d: train_tab(p, d, args.steps), eval_tab, chat_tab, sde_tab):
                step(page, shots)
    finally:
        server.should_exit = True
    for png in sorted(shots.glob("*.png")):
        shrink(png)
        png.replace(docs / png.name)
        logger.info("%s: %d KB", docs / png.name, (docs / png.name).stat().st_size // 1024)
    shots.rmdir()


if __name__ == "__main__":
    main()
