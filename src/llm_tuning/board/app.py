"""`llm-tuning board`: a web page for the whole loop (data, train, evaluate, chat and mix, SDE reports).

    llm-tuning board --workdir . --port 7860 [--api_key SECRET]

FastAPI (the app `serve` already uses, with its Host / Origin / JSON / key guard) and one page of plain
HTML and JavaScript, no build step. Long work runs elsewhere: commands as `llm-tuning` subprocesses
(jobs.py), generation and tokenizing in worker threads, so the page never waits on them. Every path from
the page stays under --workdir (paths.py).
"""

from __future__ import annotations

import dataclasses
import importlib.resources
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

try:
    from fastapi import FastAPI, Request
    from fastapi.responses import HTMLResponse, JSONResponse
    from starlette.concurrency import run_in_threadpool
except ImportError as err:  # pragma: no cover - the serve extra is optional
    raise ImportError(
        "`llm-tuning board` needs FastAPI and uvicorn: pip install 'llm-tuning[serve]'"
    ) from err

from llm_tuning.board import forms
from llm_tuning.board.jobs import JobManager
from llm_tuning.board.paths import PathRefused, find_folders, inside, list_files
from llm_tuning.config import DEFAULT_MODEL, ConfigError, check_positive, option
from llm_tuning.infer.guard import Guard, Policy, allowed_hosts, check_hosts, is_loopback

logger = logging.getLogger(__name__)

JOB_COMMANDS = ("train", "eval", "forgetting", "predict", "compare", "mix", "merge", "sde run")
DATA_SUFFIXES = (".json", ".jsonl", ".ndjson", ".csv")


@dataclass
class BoardConfig:
    """A web page for data, training, evaluation, chat and mixing, and SDE reports."""

    workdir: str = option(".", "the folder the board may read and write (data, runs, adapters, reports)")
    host: str = option("127.0.0.1", "address to bind (127.0.0.1: this machine only)")
    port: int = option(7860, "port to listen on")
    api_key: str | None = option(None, "require this key (the page asks for it once); set it off 127.0.0.1")
    model: str = option(DEFAULT_MODEL, "base model the forms start with", aliases=("model_checkpoint",))
    allowed_hosts: list[str] = option([], "more Host names clients may use (a DNS-rebinding guard)")
    max_request_bytes: int = option(50_000_000, "largest request body (an uploaded data file)")

    def __post_init__(self) -> None:
        if not Path(self.workdir).is_dir():
            raise ConfigError(f"--workdir {self.workdir}: not a folder; create it or pass an existing one")
        if not 0 < self.port < 65536:
            raise ConfigError(f"--port must be in 1..65535, got {self.port}")
        check_positive("max_request_bytes", self.max_request_bytes)
        self.allowed_hosts = check_hosts(self.allowed_hosts)


class BoardError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def config_class(command: str) -> type:
    from llm_tuning.cli import COMMANDS, _load

    if command not in COMMANDS or command == "board":
        raise BoardError(404, f"no command {command!r}")
    return _load(COMMANDS[command][0])


def page_html() -> str:
    files = importlib.resources.files("llm_tuning.board") / "static"
    html = (files / "index.html").read_text(encoding="utf-8")
    for name in ("board.css", "board.js", "tabs.js"):
        html = html.replace(f"<!--{name}-->", (files / name).read_text(encoding="utf-8"))
    return html


class Board:
    """The app's state: its folder, its jobs, and the chat tab's loaded model."""

    def __init__(self, cfg: BoardConfig) -> None:
        from llm_tuning.board.chat import ChatPool

        self.cfg = cfg
        self.workdir = Path(cfg.workdir).resolve()
        self.jobs = JobManager(self.workdir)
        self.chat = ChatPool()
        self.tokenizers: dict[str, Any] = {}

    def path(self, user_path: str) -> Path:
        try:
            return inside(self.workdir, user_path)
        except PathRefused as err:
            raise BoardError(403, str(err)) from None

    def job_request(self, command: str, raw: dict[str, Any]) -> tuple[list[str], dict[str, Any], str]:
        """(flags, typed values, equivalent command line) for the form's values; ConfigError if the CLI would refuse."""
        if command not in JOB_COMMANDS:
            raise BoardError(400, f"the board runs {', '.join(JOB_COMMANDS)}, not {command!r}")
        cls = config_class(command)
        values = forms.config_values(cls, raw, self.workdir)
        recipe = forms.recipe_values(values)
        if recipe:
            raise ConfigError(
                f"{', '.join(recipe)}: give these in a YAML recipe (flags cannot carry a mapping)"
            )
        forms.validate(cls, values)
        args = forms.command_args(cls, values)
        return args, values, forms.shell_line(command, args)

    def start(self, command: str, raw: dict[str, Any], label: str = "") -> str:
        args, values, _ = self.job_request(command, raw)
        cls = config_class(command)
        defaults = {f.name: f.default for f in dataclasses.fields(cls)}
        output = values.get(
            "output_dir", values.get("output", defaults.get("output_dir", defaults.get("output")))
        )
        extra = {"logging_steps": values.get("logging_steps", defaults.get("logging_steps"))}
        return self.jobs.start(command, args, label, output, extra)


def build_app(cfg: BoardConfig) -> FastAPI:
    """The page at `/` and its JSON API under /api (behind --api_key when given)."""
    from llm_tuning.board.routes import add_routes

    board = Board(cfg)
    app = FastAPI(title="llm-tuning board", docs_url=None, redoc_url=None, openapi_url=None)
    policy = Policy(allowed_hosts(cfg.host, cfg.allowed_hosts), frozenset(), cfg.api_key, cfg.max_request_bytes,
                    key_prefix="/api")  # fmt: skip
    app.add_middleware(Guard, policy=policy)
    app.state.board = board

    @app.exception_handler(BoardError)
    async def board_error(request: Request, err: BoardError) -> Any:
        return JSONResponse({"error": str(err)}, status_code=err.status)

    @app.exception_handler(ConfigError)
    async def config_error(request: Request, err: ConfigError) -> Any:
        return JSONResponse({"error": " ".join(str(err).split())}, status_code=400)

    @app.get("/", response_class=HTMLResponse)
    async def page() -> str:
        return page_html()

    @app.get("/api/info")
    async def info() -> dict:
        return {"workdir": str(board.workdir), "model": cfg.model, "commands": list(JOB_COMMANDS)}

    @app.get("/api/files")
    async def files(kind: str = "data") -> dict:
        suffixes = {"data": DATA_SUFFIXES, "yaml": (".yaml", ".yml"), "all": ()}.get(kind, DATA_SUFFIXES)
        found = await run_in_threadpool(list_files, board.workdir, suffixes)
        return {"files": found}

    @app.get("/api/adapters")
    async def adapters() -> dict:
        return {"adapters": await run_in_threadpool(find_folders, board.workdir, "adapter_config.json")}

    @app.get("/api/form/{command:path}")
    async def form(command: str) -> dict:
        cls = config_class(command)
        return {"command": command, "groups": forms.form_groups(cls), "help": (cls.__doc__ or "").strip()}

    @app.post("/api/command")
    async def command_line(request: Request) -> dict:
        body = await request.json()
        args, _, shell = await run_in_threadpool(
            board.job_request, body.get("command", ""), body.get("values", {})
        )
        return {"args": args, "shell": shell}

    add_routes(app, board)
    return app


def check_port_free(host: str, port: int) -> None:
    """Refuse a port another program holds with one line, before uvicorn would fail with its own log."""
    import socket

    try:
        with socket.create_server((host, port)):
            pass
    except OSError as err:
        raise ConfigError(
            f"--port {port} on {host}: cannot listen there ({err.strerror}); choose another --port"
        ) from None


def run(cfg: BoardConfig) -> Any:
    import uvicorn

    if not is_loopback(cfg.host) and not cfg.api_key:
        logger.warning("binding %s without --api_key: anyone on the network can run commands here", cfg.host)
    check_port_free(cfg.host, cfg.port)
    url = f"http://{cfg.host}:{cfg.port}/"
    logger.info(
        "llm-tuning board: open %s (it reads and writes files under %s only)",
        url,
        Path(cfg.workdir).resolve(),
    )
    uvicorn.run(build_app(cfg), host=cfg.host, port=cfg.port, log_level="warning")
    return None
