"""The console's pages: Starlette + Jinja2, server-rendered, a little vanilla JS, no build step.

Access: every page and stream needs a logged-in user (a signed session cookie,
SameSite=strict); anonymous requests get 303 to /login (pages) or 401 (streams, images). Only
``admin`` may change anything; every change is a POST carrying the session's CSRF token and is
written to the ``pipeline.console.audit`` log with the user's name. ``/healthz`` is the only
open path (a container health check).

Changes go out through the existing config path (:func:`pipeline.cloud_stage.command
.produce_configs`, the records ``pipeline config set`` makes): a rule drawn on a camera's
snapshot becomes that camera's ``rules`` (applied live by the cloud worker), a mask its
``masks`` (applied live by the edge).
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.middleware import Middleware
from starlette.middleware.sessions import SessionMiddleware
from starlette.requests import Request
from starlette.responses import PlainTextResponse, RedirectResponse, Response, StreamingResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates

from pipeline.console.auth import User, check_password, csrf_ok, load_users, new_csrf_token
from pipeline.console.charts import rule_counts_svg
from pipeline.console.feed import ConsoleFeed, LiveAlert
from pipeline.console.rules_form import RuleForm, check_camera_config, drawn, mask_config, rules_config
from pipeline.history.store import AlertQuery, HistoryStore
from pipeline.metrics import Registry
from pipeline.settings import Settings

log = logging.getLogger(__name__)
audit = logging.getLogger("pipeline.console.audit")
HERE = Path(__file__).parent
ConfigSender = Callable[[Settings, list[tuple[str, bytes]]], list[str]]


def utc_ms(text: str) -> int | str | None:
    """A history filter time (an HTML ``datetime-local`` value, read as UTC) in epoch ms; None when
    empty; the reason as a string when it is not a time (shown in the page, no search made)."""
    if not text.strip():
        return None
    for fmt in ("%Y-%m-%dT%H:%M", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%d"):
        try:
            return int(datetime.strptime(text.strip(), fmt).replace(tzinfo=UTC).timestamp() * 1000)
        except ValueError:
            continue
    return f"{text[:40]!r} is not a time (YYYY-MM-DDTHH:MM, UTC)"


def alert_json(live: LiveAlert) -> str:
    a = live.alert
    return json.dumps({
        "id": a.id, "ts": a.ts, "site": a.site, "cam": a.cam, "rule": a.rule, "track": a.track, "label": a.label,
        "edge": a.edge_score, "cloud": a.cloud_score, "fused": a.fused_score, "verdict": a.verification,
        "latency_ms": live.latency_ms, "crop": f"/crops/{a.site}/{a.cam}/{a.track}.jpg",
    })  # fmt: skip


def build_app(
    settings: Settings,
    *,
    feed: ConsoleFeed,
    store: HistoryStore | None,
    metrics: Registry,
    send_config: ConfigSender | None = None,
) -> Starlette:
    c = settings.console
    users = load_users(c.users, c.users_file)
    templates = Jinja2Templates(directory=str(HERE / "templates"))
    templates.env.filters["ms_time"] = lambda ms: time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(ms / 1000))
    if send_config is None:
        from pipeline.cloud_stage.command import produce_configs

        send_config = produce_configs

    def current_user(request: Request) -> User | None:
        name = request.session.get("user")
        return users.get(name) if isinstance(name, str) else None

    def page(request: Request, name: str, status_code: int = 200, **context: Any) -> Response:
        user = current_user(request)
        return templates.TemplateResponse(
            request, name, {"user": user, "csrf": request.session.get("csrf", ""), **context}, status_code=status_code
        )

    Handler = Callable[[Request, User], Awaitable[Response]]

    def login_required(handler: Handler, *, stream: bool = False) -> Callable[[Request], Awaitable[Response]]:
        async def wrapped(request: Request) -> Response:
            user = current_user(request)
            if user is None:
                metrics.inc("console_refused_total", help="Requests refused (not logged in).", why="anonymous")
                if stream or request.method != "GET":
                    return PlainTextResponse("login required\n", status_code=401)
                return RedirectResponse("/login", status_code=303)
            return await handler(request, user)

        return wrapped

    async def admin_post(request: Request, user: User) -> tuple[dict[str, str], Response | None]:
        form = {k: str(v) for k, v in (await request.form()).items()}
        if not csrf_ok(request.session.get("csrf"), form.get("csrf")):
            metrics.inc("console_refused_total", help="Requests refused.", why="csrf")
            return form, PlainTextResponse("bad or missing CSRF token\n", status_code=403)
        if not user.can_edit:
            metrics.inc("console_refused_total", help="Requests refused.", why="read_only")
            audit.warning("user=%s role=%s refused: %s %s (read-only)", user.name, user.role, request.method,
                          request.url.path)  # fmt: skip
            return form, PlainTextResponse(f"user {user.name} is read-only\n", status_code=403)
        return form, None

    # ---------------------------------------------------------------- login

    async def login_page(request: Request) -> Response:
        request.session.setdefault("csrf", new_csrf_token())
        return page(request, "login.html")

    async def login_post(request: Request) -> Response:
        form = await request.form()
        if not csrf_ok(request.session.get("csrf"), str(form.get("csrf", ""))):
            return PlainTextResponse("bad or missing CSRF token\n", status_code=403)
        name, password = str(form.get("username", "")), str(form.get("password", ""))
        user = users.get(name)
        if user is None or not await run_in_threadpool(check_password, password, user.password_hash):
            audit.warning("login failed for %r from %s", name[:64], request.client.host if request.client else "?")
            return page(request, "login.html", 401, error="wrong user name or password")
        request.session.clear()
        request.session.update({"user": user.name, "csrf": new_csrf_token()})
        audit.info("user=%s role=%s logged in", user.name, user.role)
        return RedirectResponse("/", status_code=303)

    async def logout(request: Request, user: User) -> Response:
        form = await request.form()
        if not csrf_ok(request.session.get("csrf"), str(form.get("csrf", ""))):
            return PlainTextResponse("bad or missing CSRF token\n", status_code=403)
        request.session.clear()
        audit.info("user=%s logged out", user.name)
        return RedirectResponse("/login", status_code=303)

    # ---------------------------------------------------------------- pages

    async def fleet(request: Request, user: User) -> Response:
        return page(request, "fleet.html", fleet=feed.fleet(), now_ms=int(time.time() * 1000))

    async def live(request: Request, user: User) -> Response:
        return page(request, "live.html", recent=[json.loads(alert_json(a)) for a in list(feed.recent)[:50]])

    async def stream(request: Request, user: User) -> Response:
        queue = feed.subscribe()

        async def events() -> AsyncIterator[str]:
            try:
                yield ": connected\n\n"
                while True:
                    try:
                        live_alert = await asyncio.wait_for(queue.get(), timeout=15)
                    except TimeoutError:
                        yield ": keep-alive\n\n"  # also notices a closed tab
                        continue
                    yield f"event: alert\ndata: {alert_json(live_alert)}\n\n"
            finally:
                feed.unsubscribe(queue)

        headers = {"Cache-Control": "no-store", "X-Accel-Buffering": "no"}
        return StreamingResponse(events(), media_type="text/event-stream", headers=headers)

    def _store() -> HistoryStore:
        if store is None:
            raise RuntimeError("no history store")
        return store

    async def history(request: Request, user: User) -> Response:
        if store is None:
            return page(request, "history.html", rows=[], total=0, error="no history store configured", q={},
                        page_no=1, pages=1, chart="", choices={})  # fmt: skip
        p = request.query_params
        page_no = max(1, int(p.get("page", "1") or 1)) if (p.get("page", "1") or "1").isdigit() else 1
        since, until = utc_ms(p.get("since", "")), utc_ms(p.get("until", ""))
        bad_time = next((f"{k}: {t}" for k, t in (("since", since), ("until", until)) if isinstance(t, str)), None)
        q = AlertQuery(site=p.get("site") or None, cam=p.get("cam") or None, rule=p.get("rule") or None,
                       verification=p.get("verification") or None, limit=c.page_size,
                       offset=(page_no - 1) * c.page_size, since_ms=None if isinstance(since, str) else since,
                       until_ms=None if isinstance(until, str) else until)  # fmt: skip
        rows, total = ([], 0) if bad_time else await run_in_threadpool(lambda: (store.search(q), store.count(q)))
        hour = 3600 * 1000
        start = (int(time.time() * 1000) // hour - 23) * hour
        counts = await run_in_threadpool(store.rule_counts, start, hour, 24)
        choices = {col: await run_in_threadpool(store.distinct, col) for col in ("site", "cam", "rule")}
        return page(request, "history.html", rows=rows, total=total, page_no=page_no,
                    pages=max(1, -(-total // c.page_size)), q={k: v for k, v in p.items() if k != "page"},
                    chart=rule_counts_svg(counts), choices=choices, error=bad_time)  # fmt: skip

    async def alert_detail(request: Request, user: User) -> Response:
        alert_id = request.path_params["alert_id"]
        row = await run_in_threadpool(_store().get, alert_id) if store is not None else None
        live_alert = next((a for a in list(feed.recent) if a.alert.id == alert_id), None)
        if row is None and live_alert is None:
            return page(request, "alert.html", 404, alert=None, received_ms=None, latency_ms=None)
        alert = row.alert if row is not None else live_alert.alert  # type: ignore[union-attr]
        received = row.received_ms if row is not None else live_alert.received_ms  # type: ignore[union-attr]
        return page(request, "alert.html", alert=alert, received_ms=received, latency_ms=received - alert.event_ts)

    async def crop(request: Request, user: User) -> Response:
        site, cam, track = request.path_params["site"], request.path_params["cam"], request.path_params["track"]
        jpeg = feed.crop(site, cam, track)
        if jpeg is None and store is not None:
            jpeg = await run_in_threadpool(store.crop, site, cam, track)
        if jpeg is None:
            return Response(status_code=404)
        return Response(jpeg, media_type="image/jpeg", headers={"Cache-Control": "private, max-age=3600"})

    async def camera_page(request: Request, user: User, *, errors: list[str] | None = None,
                          form: dict[str, str] | None = None, status_code: int = 200) -> Response:  # fmt: skip
        site, cam = request.path_params["site"], request.path_params["cam"]
        view = feed.camera(site, cam)
        if view is None:
            return page(request, "camera.html", 404, view=None, site=site, cam=cam, errors=[], form={})
        return page(
            request,
            "camera.html",
            status_code,
            view=view,
            site=site,
            cam=cam,
            errors=errors or [],
            form=form or {},
            rules=view.config.get("rules") or [],
            masks=view.config.get("masks") or [],
            shapes={
                "rules": view.config.get("rules") or [],
                "masks": view.config.get("masks") or [],
                "tracks": [
                    {"track": t, "label": label, "box": list(box)}
                    for t, (label, box, _ts) in sorted(view.tracks.items())
                ],
            },
        )

    async def camera_get(request: Request, user: User) -> Response:
        return await camera_page(request, user)

    async def snapshot(request: Request, user: User) -> Response:
        view = feed.camera(request.path_params["site"], request.path_params["cam"])
        if view is None or view.snapshot is None:
            return Response(status_code=404)
        return Response(view.snapshot, media_type="image/jpeg", headers={"Cache-Control": "no-store"})

    async def shape_save(request: Request, user: User) -> Response:
        form, refused = await admin_post(request, user)
        if refused is not None:
            return refused
        site, cam = request.path_params["site"], request.path_params["cam"]
        view = feed.camera(site, cam)
        current = view.config if view is not None else {}
        parsed = RuleForm.parse(form, cam)
        if isinstance(parsed, list):
            return await camera_page(request, user, errors=parsed, form=form, status_code=400)
        config = mask_config(current, parsed) if parsed.kind == "mask" else rules_config(current, parsed)
        problems = config if isinstance(config, list) else check_camera_config(cam, config)
        if problems or isinstance(config, list):
            return await camera_page(request, user, errors=problems, form=form, status_code=400)
        return await _send(request, user, site, cam, config, f"save {parsed.kind} {parsed.name}")

    async def shape_delete(request: Request, user: User) -> Response:
        form, refused = await admin_post(request, user)
        if refused is not None:
            return refused
        site, cam = request.path_params["site"], request.path_params["cam"]
        view = feed.camera(site, cam)
        current = view.config if view is not None else {}
        name = form.get("name", "")
        if form.get("kind") == "mask":
            masks = list(current.get("masks") or [])
            index = int(name) if name.isdigit() else -1
            if not 0 <= index < len(masks):
                return await camera_page(request, user, errors=[f"no mask {name!r}"], status_code=400)
            del masks[index]
            config: dict[str, Any] = {**drawn(current), "masks": masks}
        else:
            rules = [r for r in current.get("rules") or [] if r.get("id") != name]
            config = {**drawn(current), "rules": rules}
        return await _send(request, user, site, cam, config, f"delete {form.get('kind', 'rule')} {name}")

    async def _send(request: Request, user: User, site: str, cam: str, config: dict[str, Any], what: str) -> Response:
        from pipeline.cloud_stage.command import config_record
        from pipeline.errors import PipelineError

        record = config_record(site, cam, config)
        try:
            lines = await run_in_threadpool(send_config, settings, [(cam, record)])
        except PipelineError as exc:
            audit.error("user=%s %s on %s/%s failed: %s", user.name, what, site, cam, exc)
            return await camera_page(request, user, errors=[f"not sent: {exc}"], status_code=502)
        audit.info("user=%s role=%s %s on %s/%s: %s", user.name, user.role, what, site, cam, " ".join(lines))
        metrics.inc("console_changes_total", help="Config changes sent.", user=user.name)
        return RedirectResponse(f"/cameras/{site}/{cam}?saved=1", status_code=303)

    async def healthz(request: Request) -> Response:
        ok = feed.connected.is_set()
        return PlainTextResponse("ok\n" if ok else "mqtt not connected\n", status_code=200 if ok else 503)

    routes = [
        Route("/healthz", healthz),
        Route("/login", login_page, methods=["GET"]),
        Route("/login", login_post, methods=["POST"]),
        Route("/logout", login_required(logout), methods=["POST"]),
        Route("/", login_required(fleet)),
        Route("/live", login_required(live)),
        Route("/live/stream", login_required(stream, stream=True)),
        Route("/history", login_required(history)),
        Route("/alerts/{alert_id}", login_required(alert_detail)),
        Route("/crops/{site}/{cam}/{track:int}.jpg", login_required(crop, stream=True)),
        Route("/cameras/{site}/{cam}", login_required(camera_get)),
        Route("/cameras/{site}/{cam}/snapshot.jpg", login_required(snapshot, stream=True)),
        Route("/cameras/{site}/{cam}/shapes", login_required(shape_save), methods=["POST"]),
        Route("/cameras/{site}/{cam}/shapes/delete", login_required(shape_delete), methods=["POST"]),
        Mount("/static", StaticFiles(directory=str(HERE / "static")), name="static"),
    ]

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        yield

    secret = c.session_secret.get_secret_value() if c.session_secret else secrets.token_urlsafe(32)
    middleware = [
        Middleware(
            SessionMiddleware,
            secret_key=secret,
            session_cookie="console_session",
            max_age=c.session_max_age_s,
            same_site="strict",
            https_only=False,
        )
    ]
    return Starlette(routes=routes, middleware=middleware, lifespan=lifespan)
