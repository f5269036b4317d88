"""The board's JSON API beyond forms: jobs, recipes, data preview, chat and mix, evaluation and SDE reports.

    GET /api/jobs  POST /api/jobs  GET /api/jobs/ID  POST /api/jobs/ID/stop  POST /api/jobs/ID/resume
    POST /api/data/preview  POST /api/chat/compare  POST /api/chat/stream  GET /api/sde  GET /api/file

Routes only check and translate; the work is in jobs.py, data_view.py, chat.py and the CLI commands.
"""

from __future__ import annotations

import json
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import FileResponse, StreamingResponse
from starlette.concurrency import iterate_in_threadpool, run_in_threadpool

from llm_tuning.board import forms
from llm_tuning.board.app import BoardError, config_class
from llm_tuning.board.paths import find_folders, list_files, relative
from llm_tuning.files import write_text
from llm_tuning.models.generate import GenerationOptions

IMAGE_TYPES = {".png": "image/png", ".jpg": "image/jpeg", ".svg": "image/svg+xml"}


def add_routes(app: FastAPI, board: Any) -> None:
    _job_routes(app, board)
    _data_routes(app, board)
    _chat_routes(app, board)
    _report_routes(app, board)


def _job(board: Any, job_id: str, call: Any) -> Any:
    try:
        return call(job_id)
    except KeyError:
        raise BoardError(404, f"no job {job_id!r}") from None


def _job_routes(app: FastAPI, board: Any) -> None:
    @app.get("/api/jobs")
    async def jobs() -> dict:
        return {"jobs": await run_in_threadpool(lambda: [board.jobs.summary(i) for i in board.jobs.ids()])}

    @app.post("/api/jobs")
    async def start(request: Request) -> dict:
        body = await request.json()
        job_id = await run_in_threadpool(board.start, body.get("command", ""), body.get("values", {}),
                                         body.get("label", ""))  # fmt: skip
        return {"id": job_id}

    @app.get("/api/jobs/{job_id}")
    async def status(job_id: str) -> dict:
        return await run_in_threadpool(_job, board, job_id, board.jobs.status)

    @app.post("/api/jobs/{job_id}/stop")
    async def stop(job_id: str) -> dict:
        return {"result": _job(board, job_id, board.jobs.stop)}

    @app.post("/api/jobs/{job_id}/resume")
    async def resume(job_id: str) -> dict:
        try:
            return {"id": await run_in_threadpool(_job, board, job_id, board.jobs.resume)}
        except ValueError as err:
            raise BoardError(409, str(err)) from None

    @app.post("/api/recipe/load")
    async def load_recipe(request: Request) -> dict:
        body = await request.json()
        return {
            "values": forms.read_recipe(config_class(body.get("command", "train")), board.path(body["path"]))
        }

    @app.post("/api/recipe/save")
    async def save_recipe(request: Request) -> dict:
        body = await request.json()
        path = board.path(body.get("path", ""))
        if path.suffix not in (".yaml", ".yml"):
            raise BoardError(400, "a recipe is a .yaml file: give a name ending in .yaml")
        if path.exists():
            raise BoardError(
                409, f"{relative(board.workdir, path)} exists: choose a new name (nothing is overwritten)"
            )
        values = forms.config_values(
            config_class(body.get("command", "train")), body.get("values", {}), board.workdir
        )
        write_text(path, forms.recipe_text(values))
        return {"path": relative(board.workdir, path)}


def _data_routes(app: FastAPI, board: Any) -> None:
    @app.post("/api/upload")
    async def upload(request: Request) -> dict:
        body = await request.json()
        name = str(body.get("name", "")).replace("\\", "/").rsplit("/", 1)[-1]
        if not name.lower().endswith((".json", ".jsonl", ".csv", ".yaml", ".yml")):
            raise BoardError(400, "upload a .json, .jsonl, .csv or .yaml file")
        path = board.path(f"uploads/{name}")
        if path.exists():
            raise BoardError(409, f"uploads/{name} exists: rename the file (nothing is overwritten)")
        write_text(path, str(body.get("text", "")))
        return {"path": relative(board.workdir, path)}

    @app.post("/api/data/preview")
    async def preview(request: Request) -> dict:
        body = await request.json()
        path = board.path(body.get("path", ""))
        return await run_in_threadpool(_preview, board, path, body)


def _preview(board: Any, path: Any, body: dict) -> dict:
    from llm_tuning.board.chat import resolve_model
    from llm_tuning.board.data_view import preview
    from llm_tuning.models.load import load_tokenizer

    model = resolve_model(board.workdir, body.get("model") or board.cfg.model)
    if model not in board.tokenizers:
        board.tokenizers[model] = load_tokenizer(model)
    system = body.get("system_prompt") or None
    return preview(board.tokenizers[model], path, prompt_key=body.get("prompt_key") or "prompt",
                   target_key=body.get("target_key") or "target", template=body.get("template") or "chat",
                   system_prompt=system, max_seq_length=int(body.get("max_seq_length") or 2048),
                   label=relative(board.workdir, path))  # fmt: skip


def _selection(board: Any, body: dict) -> tuple[str, list[tuple[str, str, float]]]:
    from llm_tuning.board.chat import adapter_name, resolve_model

    model = resolve_model(board.workdir, body.get("model") or board.cfg.model)
    adapters = []
    for item in body.get("adapters", []):
        folder = board.path(item["path"])
        if not (folder / "adapter_config.json").is_file():
            raise BoardError(400, f"{item['path']}: no adapter_config.json there (not an adapter folder)")
        adapters.append((adapter_name(item["path"]), str(folder), float(item.get("weight", 1.0))))
    return model, adapters


def _options(body: dict) -> GenerationOptions:
    tokens = int(body.get("max_new_tokens") or 64)
    if not 1 <= tokens <= 2048:
        raise BoardError(400, f"max_new_tokens must be in 1..2048, got {tokens}")
    return GenerationOptions(max_new_tokens=tokens)


def _chat_routes(app: FastAPI, board: Any) -> None:
    @app.post("/api/chat/compare")
    async def compare(request: Request) -> dict:
        body = await request.json()
        model, adapters = _selection(board, body)
        names = await run_in_threadpool(board.chat.select, model, adapters)
        answers = await run_in_threadpool(board.chat.compare, str(body.get("prompt", "")), _options(body),
                                          body.get("system_prompt") or None)  # fmt: skip
        return {"variants": names, "answers": answers}

    @app.post("/api/chat/stream")
    async def stream(request: Request) -> Any:
        body = await request.json()
        model, adapters = _selection(board, body)
        names = await run_in_threadpool(board.chat.select, model, adapters)
        variant = body.get("variant") or names[-1]
        if variant not in names:
            raise BoardError(400, f"variant {variant!r} is not loaded; choose one of {', '.join(names)}")
        pieces = board.chat.stream(
            variant, body.get("messages", []), _options(body), body.get("system_prompt") or None
        )

        async def events() -> Any:
            try:
                async for piece in iterate_in_threadpool(pieces):
                    yield f"data: {json.dumps({'text': piece})}\n\n"
            except Exception as err:  # the page shows it in place of the rest of the reply
                yield f"data: {json.dumps({'error': f'{type(err).__name__}: {err}'})}\n\n"
            yield f"data: {json.dumps({'done': True, 'variant': variant})}\n\n"

        return StreamingResponse(
            events(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"}
        )

    @app.post("/api/chat/save")
    async def save(request: Request) -> dict:
        """The current mix as an adapter folder (`mix`) or a merged model (`merge`): a job, like training."""
        body = await request.json()
        command = body.get("command")
        if command not in ("mix", "merge"):
            raise BoardError(400, "command must be mix or merge")
        values = {"model": body.get("model") or board.cfg.model, "output": body.get("output", ""),
                  "adapter": [f"{a['path']}:{float(a.get('weight', 1.0))}" for a in body.get("adapters", [])],
                  "method": body.get("method") or "cat"}  # fmt: skip
        if board.path(values["output"] or ".").exists() and values["output"]:
            raise BoardError(409, f"{values['output']} exists: choose a new folder (nothing is overwritten)")
        return {
            "id": await run_in_threadpool(board.start, command, values, f"{command} -> {values['output']}")
        }


def _report_routes(app: FastAPI, board: Any) -> None:
    @app.get("/api/reports")
    async def reports() -> dict:
        found = await run_in_threadpool(lambda: {"sde": find_folders(board.workdir, "report.md"),
                                                 "eval": find_folders(board.workdir, "eval.json")})  # fmt: skip
        return found

    @app.get("/api/report")
    async def report(path: str) -> dict:
        folder = board.path(path)
        if not folder.is_dir():
            raise BoardError(404, f"{path}: no such folder")
        return await run_in_threadpool(_report, board, folder)

    @app.get("/api/file")
    async def file(path: str) -> Any:
        target = board.path(path)
        if target.suffix.lower() not in IMAGE_TYPES or not target.is_file():
            raise BoardError(404, f"{path}: not an image file under the working folder")
        return FileResponse(target, media_type=IMAGE_TYPES[target.suffix.lower()])

    @app.get("/api/rows")
    async def rows(path: str, limit: int = 50) -> dict:
        from llm_tuning.data.read import DataError, iter_rows

        target = board.path(path)
        try:
            out = [
                row for _, (_, row) in zip(range(max(1, min(limit, 500))), iter_rows(target), strict=False)
            ]
        except DataError as err:
            raise BoardError(400, str(err)) from None
        return {"rows": out}


def _report(board: Any, folder: Any) -> dict:
    out: dict[str, Any] = {"path": relative(board.workdir, folder)}
    for name in ("report.md", "eval.md"):
        if (folder / name).is_file():
            out["markdown"] = (folder / name).read_text(encoding="utf-8", errors="replace")
    for name in ("report.json", "eval.json"):
        if (folder / name).is_file():
            try:
                out["json"] = json.loads((folder / name).read_text(encoding="utf-8"))
            except ValueError:
                pass
    out["images"] = [relative(board.workdir, p) for p in sorted(folder.glob("*.png"))]
    out["predictions"] = [f for f in list_files(folder, (".jsonl",)) if "predictions" in f or "score" in f][
        :200
    ]
    out["predictions"] = [relative(board.workdir, folder / f) for f in out["predictions"]]
    return out
