"""The board's JSON API: create, list, watch, stop and resume runs (pages come on top of it).

Configs posted as JSON are validated by the same schema as YAML files (422 lists every problem);
paths in them must stay inside the allowed roots; runs start through `Launcher` as argument lists.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import time
from collections.abc import AsyncIterator, Iterable
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode

import yaml
from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, StreamingResponse
from starlette.staticfiles import StaticFiles

from tuneforge.board.chat import ChatEngines, stream_answer
from tuneforge.board.guard import MAX_KEYS, BoardGuard, count_keys
from tuneforge.board.launcher import Launcher
from tuneforge.board.paths import check_paths
from tuneforge.board.preview import DatasetPreviews, PreviewProblem
from tuneforge.config import ConfigError, build_config
from tuneforge.runs.metrics import read_lines, read_records
from tuneforge.runs.registry import RunRegistry

HERE = Path(__file__).resolve().parent
LANGUAGES = ("en", "zh")
FINAL = ("done", "failed", "stopped")
TOKEN_COOKIE = "tuneforge_token"


async def body_object(request: Request) -> dict[str, Any]:
    """The request's JSON object, or a 4xx that says what shape was expected."""
    try:
        body = json.loads(await request.body())
    except (ValueError, RecursionError):
        raise HTTPException(400, "the body is not valid JSON") from None
    if not isinstance(body, dict):
        raise HTTPException(422, f"the body must be a JSON object, not a {type(body).__name__}")
    if count_keys(body) > MAX_KEYS:
        raise HTTPException(413, f"the body has more than {MAX_KEYS} keys and items")
    return body


def safe_yaml(text: str) -> Any:
    """YAML without aliases (`*name`): a few hundred bytes of nested aliases expand to gigabytes."""
    if any(isinstance(token, yaml.AliasToken) for token in yaml.scan(text, Loader=yaml.SafeLoader)):
        raise yaml.YAMLError("aliases (*name) are not accepted in a config")
    return yaml.safe_load(text) or {}


def create_board_app(
    registry: RunRegistry,
    launcher: Launcher,
    roots: list[Path],
    token: str | None = None,
    allowed_hosts: Iterable[str] = (),
    reward_dirs: Iterable[Path] = (),
) -> FastAPI:
    app = FastAPI(title="tuneforge board", docs_url=None, redoc_url=None, openapi_url=None)
    app.add_middleware(BoardGuard, allowed_hosts=allowed_hosts)
    roots = [Path(r).resolve() for r in roots]
    reward_dirs = [Path(d).resolve() for d in reward_dirs]

    def token_ok(given: str) -> bool:
        return token is None or hmac.compare_digest(given.encode(), token.encode())

    @app.middleware("http")
    async def require_token(request: Request, call_next: Any) -> Any:
        path = request.url.path
        if token and path != "/login" and not path.startswith("/static/"):
            header = request.headers.get("authorization", "")
            given = (
                header[7:] if header.lower().startswith("bearer ") else request.cookies.get(TOKEN_COOKIE, "")
            )
            if not token_ok(given):
                if path.startswith("/api/") or request.method != "GET":
                    return JSONResponse({"detail": "a valid token is required"}, status_code=401)
                return RedirectResponse(f"/login?{urlencode({'next': path})}", status_code=303)
        return await call_next(request)

    def run_or_404(run_id: str) -> Any:
        try:
            return registry.get(run_id)
        except KeyError:
            raise HTTPException(404, f"no run {run_id}") from None

    app.mount("/static", StaticFiles(directory=HERE / "static"), name="static")
    pages = _templates()

    def page(request: Request, name: str, **context: Any) -> HTMLResponse:
        lang = request.query_params.get("lang") or request.cookies.get("tuneforge_lang") or "en"
        lang = lang if lang in LANGUAGES else "en"
        html = pages.get_template(name).render(lang=lang, t=_strings(lang), **context)
        response = HTMLResponse(html)
        if request.query_params.get("lang") in LANGUAGES:
            response.set_cookie("tuneforge_lang", lang, samesite="strict")
        return response

    @app.get("/")
    async def home() -> RedirectResponse:
        return RedirectResponse("/runs")

    @app.get("/login")
    async def login_page(request: Request) -> HTMLResponse:
        return page(request, "login.html", next=_local(request.query_params.get("next")), failed=False)

    @app.post("/login")
    async def login(request: Request) -> Any:
        form = parse_qs((await request.body()).decode("utf-8", "replace"))
        given, target = form.get("token", [""])[0], _local(form.get("next", ["/"])[0])
        if not token_ok(given):
            response = page(request, "login.html", next=target, failed=True)
            response.status_code = 401
            return response
        response = RedirectResponse(target, status_code=303)
        response.set_cookie(TOKEN_COOKIE, given, httponly=True, samesite="strict")
        return response

    @app.get("/runs")
    async def runs_page(request: Request) -> HTMLResponse:
        return page(request, "runs.html", runs=[_summary(r) for r in registry.list()])

    @app.get("/runs/{run_id}")
    async def run_page(request: Request, run_id: str) -> HTMLResponse:
        return page(request, "run.html", run=run_or_404(run_id))

    @app.get("/train")
    async def train_page(request: Request) -> HTMLResponse:
        from tuneforge.config.help import form_sections

        return page(request, "train.html", sections=form_sections())

    chats = ChatEngines(registry, roots)
    app.state.chats = chats
    previews = DatasetPreviews(roots, chats.check_model)

    @app.get("/api/datasets")
    async def datasets(dataset_dir: str = "data") -> Any:
        try:
            return {"datasets": previews.datasets(dataset_dir)}
        except PreviewProblem as err:
            return JSONResponse({"problems": err.problems}, status_code=422)

    @app.post("/api/preview")
    async def preview(request: Request) -> Any:
        body = await body_object(request)
        rows = body.pop("rows", 3) or 3
        if type(rows) is not int or not 1 <= rows <= 50:
            return JSONResponse({"problems": ["rows must be a whole number from 1 to 50"]}, status_code=422)
        try:
            return await asyncio.to_thread(previews.preview, body, rows)
        except PreviewProblem as err:
            return JSONResponse({"problems": err.problems}, status_code=422)

    @app.get("/chat")
    async def chat_page(request: Request) -> HTMLResponse:
        return page(request, "chat.html", adapters=chats.adapters_available())

    @app.post("/api/chat")
    async def chat(request: Request) -> Any:
        body = await body_object(request)
        model = str(body.get("model") or "smollm2-135m-instruct")
        entries = [str(r) for r in body.get("adapters") or []]
        folders, problems = chats.adapter_folders(entries)
        problem = chats.check_model(model)
        messages = body.get("messages")
        if problem:
            problems.append(problem)
        if not isinstance(messages, list) or not messages:
            problems.append("messages must be a non-empty list of {role, content}")
        adapter = body.get("adapter") or None
        if adapter is not None and adapter not in entries:
            problems.append(f"adapter {adapter} is not among the loaded adapters")
        if problems:
            return JSONResponse({"problems": problems}, status_code=422)
        engine, names = await asyncio.to_thread(chats.engine, model, folders)
        adapter = names[adapter] if adapter is not None else None
        turns = [{"role": str(m.get("role")), "content": str(m.get("content", ""))} for m in messages]
        try:
            prompt = engine.render(turns)
        except Exception as err:  # e.g. turns out of order
            return JSONResponse({"problems": [f"cannot render these messages: {err}"]}, status_code=422)
        room = engine.context_length - len(prompt)
        if room < 1:
            return JSONResponse(
                {"problems": [f"the conversation fills the context ({len(prompt)} tokens)"]}, status_code=422
            )
        params = engine.sampling_params(
            max_new_tokens=min(int(body.get("max_new_tokens") or 256), room),
            temperature=float(body["temperature"]) if body.get("temperature") is not None else None,
        )
        return StreamingResponse(
            stream_answer(engine, prompt, adapter, params), media_type="text/event-stream"
        )

    @app.post("/api/yaml")
    async def to_yaml(request: Request) -> dict[str, str]:
        flat = {k: v for k, v in (await body_object(request)).items() if v is not None}
        return {"yaml": yaml.safe_dump(flat, sort_keys=False, allow_unicode=True)}

    @app.post("/api/parse-yaml")
    async def parse_yaml(request: Request) -> Any:
        text = (await body_object(request)).get("yaml", "")
        if not isinstance(text, str):
            return JSONResponse({"problems": ["yaml must be text"]}, status_code=422)
        try:
            flat = safe_yaml(text)
        except yaml.YAMLError as err:
            return JSONResponse({"problems": [f"not valid YAML: {err}"]}, status_code=422)
        if not isinstance(flat, dict):
            return JSONResponse({"problems": ["the YAML must be a mapping of config keys"]}, status_code=422)
        try:
            return {"config": build_config(flat).to_flat()}
        except ConfigError as err:
            return JSONResponse({"problems": err.problems}, status_code=422)

    @app.get("/api/runs")
    async def list_runs() -> list[dict[str, Any]]:
        return [run.as_dict() for run in registry.list()]

    @app.post("/api/runs", status_code=201)
    async def create_run(request: Request) -> Any:
        flat = await body_object(request)  # a 4xx with a sentence unless it is a JSON object
        problems = check_paths(flat, roots, reward_dirs=reward_dirs)
        try:
            cfg = build_config(flat)
        except ConfigError as err:
            problems = list(err.problems) + problems
        if problems:
            return JSONResponse({"problems": problems}, status_code=422)
        run_id = launcher.submit(cfg.to_flat())
        return registry.get(run_id).as_dict()

    @app.get("/api/runs/{run_id}")
    async def get_run(run_id: str) -> dict[str, Any]:
        registry.reconcile()
        return run_or_404(run_id).as_dict()

    @app.post("/api/runs/{run_id}/stop")
    async def stop_run(run_id: str) -> dict[str, Any]:
        run_or_404(run_id)
        launcher.stop(run_id)
        return registry.get(run_id).as_dict()

    @app.post("/api/runs/{run_id}/resume")
    async def resume_run(run_id: str) -> dict[str, Any]:
        run = run_or_404(run_id)
        if run.status in ("queued", "running"):
            raise HTTPException(409, f"run {run_id} is {run.status}")
        if run.status == "done":
            raise HTTPException(
                409,
                f"run {run_id} is finished and its model is in {run.output_dir}; resuming would change it. "
                "Start a new run (or one with a larger max_steps) to train more",
            )
        launcher.resume(run_id)
        return registry.get(run_id).as_dict()

    @app.get("/api/runs/{run_id}/metrics")
    async def metrics(run_id: str) -> list[dict[str, Any]]:
        run = run_or_404(run_id)
        records, _ = read_records(Path(run.output_dir) / "metrics.jsonl")
        return records

    @app.get("/api/runs/{run_id}/events")
    async def events(run_id: str, poll: float = 0.2) -> StreamingResponse:
        poll = min(max(poll, 0.1), 10.0)  # poll=0 would spin a core
        run_or_404(run_id)
        return StreamingResponse(_events(registry, run_id, poll), media_type="text/event-stream")

    return app


def _local(target: str | None) -> str:
    """Where to go after logging in: a path on this board, never another site."""
    return target if target and target.startswith("/") and not target.startswith("//") else "/"


def _templates() -> Any:
    from jinja2 import Environment, FileSystemLoader, select_autoescape

    return Environment(loader=FileSystemLoader(HERE / "templates"), autoescape=select_autoescape(["html"]))


def _strings(lang: str) -> dict[str, str]:
    return json.loads((HERE / "locales" / f"{lang}.json").read_text(encoding="utf-8"))


def _summary(run: Any) -> dict[str, Any]:
    """A run's row on the runs page: progress (steps) and a naive ETA from the time per step so far."""
    records, _ = read_records(Path(run.output_dir) / "metrics.jsonl")
    steps = [r["step"] for r in records if "loss" in r]
    total = run.config.get("max_steps") if isinstance(run.config.get("max_steps"), int) else -1
    done = max(steps, default=0)
    progress = f"{done}/{total}" if total and total > 0 else str(done)
    eta = ""
    if run.status == "running" and run.started and done and total and total > done:
        eta = f"{(time.time() - run.started) / done * (total - done):.0f} s"
    created = time.strftime("%Y-%m-%d %H:%M", time.localtime(run.created))
    return {**run.as_dict(), "progress": progress, "eta": eta, "created_text": created}


async def _events(registry: RunRegistry, run_id: str, poll: float) -> AsyncIterator[str]:
    """Server-sent events: `metric` per metrics.jsonl line, `log` per log line, `status` on each change."""
    metrics_at = log_at = 0
    last_status = None
    while True:
        registry.reconcile()
        run = registry.get(run_id)
        records, metrics_at = read_records(Path(run.output_dir) / "metrics.jsonl", metrics_at)
        for record in records:
            yield f"event: metric\ndata: {json.dumps(record)}\n\n"
        if run.log_path:
            lines, log_at = read_lines(Path(run.log_path), log_at)
            for line in lines:
                yield f"event: log\ndata: {json.dumps(line)}\n\n"
        if run.status != last_status:
            last_status = run.status
            yield f"event: status\ndata: {json.dumps({'status': run.status, 'exit_code': run.exit_code, 'reason': run.reason})}\n\n"
        if run.status in FINAL:
            return
        await asyncio.sleep(poll)
