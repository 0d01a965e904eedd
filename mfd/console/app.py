"""The console's Starlette app. Reading is open (the page, its fragments, an alarm's risk plot, `/metrics`);
the actions (`POST /alarms/{id}/acknowledge|snooze|resolve`) need `Authorization: Bearer <key>` when API keys
are configured (MFD_API_KEYS, as the Bento service; production refuses to start without): 401 without one,
404 for an unknown alarm, 409 with the current state when someone else moved it meanwhile, 422 naming the
field for a snooze not in the future or a resolve without an outcome."""

from __future__ import annotations

import html
import json
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy.engine import Engine
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from mfd.alarms import AlarmConflict, AlarmNotFound, InvalidAction, acknowledge, resolve, snooze
from mfd.alarms.model import aware
from mfd.console import data, render
from mfd.schema import PROFILE
from mfd.serving.guards import key_matches
from mfd.storage.tables import ensure_alarm_tables, ensure_detection_tables

_STARTED = secrets.token_hex(4)  # the tables' tokens of this process differ from an earlier one's


@dataclass(frozen=True)
class ConsoleConfig:
    stale_after: timedelta = timedelta(minutes=10)
    poll_s: float = 3.0
    api_keys: tuple[str, ...] = ()
    title: str = f"mfd console · {PROFILE.name}"


def _tables(
    engine: data.Source, config: ConsoleConfig, caches: render.Caches, now: datetime, key: tuple
) -> dict[str, str]:
    """The alarm and fleet tables and their token: as last rendered while the store's version and the
    number of stale machines (which grows with time alone) are unchanged, else read and rendered
    (unchanged rows from `caches`; the fleet read brings the trends that changed, see `keep_trends`)."""
    last = caches.tables
    if last is not None and last[0] == key:
        return last[1]
    machines = data.fleet(engine, now, config.stale_after, trends_after=caches.trends_after())
    missing = set(render.keep_trends(machines, caches))
    if missing:  # a last reading id that moved without passing the cursor: read those trends by key
        read = data.trends(engine, sorted(missing))
        caches.trends |= {name: found for name, found in read.items() if name in missing}
    alarms = data.alarm_list(engine)
    caches.rendered += 1
    tables = {
        "alarms": render.alarm_rows(alarms, caches),
        "fleet": render.fleet_rows(machines, caches),
        "tables": f"{_STARTED}-{caches.rendered}",
    }
    caches.tables = (key, tables)
    return tables


def fragments(
    engine: Engine,
    config: ConsoleConfig,
    caches: render.Caches,
    now: datetime | None = None,
    shown: str | None = None,
) -> dict[str, str]:
    """The page's live parts as HTML: the summary from this moment's figures, the tables re-rendered only
    when what they show changed, and their token ("tables"); the tables are left out when `shown` (the
    token of those the page shows) is theirs."""
    now = now or datetime.now(UTC)
    with data.reading(engine) as conn:  # one connection for the page's reads
        figures = data.figures(conn, now, config.stale_after)
        key = (*data.version(conn), figures.machines_stale)
        tables = _tables(conn, config, caches, now, key)
    if shown == tables["tables"]:
        tables = {"tables": tables["tables"]}
    return {
        "summary": render.summary(figures, config.stale_after, now),
        **tables,
        "generated_at": now.isoformat(),
    }


def _until(body: dict[str, Any]) -> datetime | None:
    if body.get("minutes") is not None:
        try:
            return datetime.now(UTC) + timedelta(minutes=float(body["minutes"]))
        except (TypeError, ValueError):
            raise InvalidAction("minutes", "give a number of minutes") from None
    text = body.get("until")
    if text is None:
        return None
    try:
        return aware(datetime.fromisoformat(str(text).replace("Z", "+00:00")))
    except ValueError:
        raise InvalidAction("until", f"{text!r} is not an ISO 8601 time") from None


def _act(engine: Engine, action: str, alarm_id: int, body: dict[str, Any]) -> dict[str, Any]:
    actor = str(body.get("actor") or "")
    if action == "acknowledge":
        return acknowledge(engine, alarm_id, actor)
    if action == "snooze":
        return snooze(engine, alarm_id, actor, _until(body))
    return resolve(
        engine,
        alarm_id,
        actor,
        body.get("outcome") or None,
        failure_mode=body.get("failure_mode") or None,
        note=body.get("note"),
    )


def _error(status: int, message: str, **extra: Any) -> JSONResponse:
    return JSONResponse({"error": message, **extra}, status_code=status)


def _action_endpoint(engine: Engine, config: ConsoleConfig, action: str) -> Callable:
    async def endpoint(request: Request) -> Response:
        if config.api_keys and not key_matches(request.headers.get("authorization"), config.api_keys):
            return _error(401, "missing or wrong API key")
        raw = await request.body()
        try:
            body = json.loads(raw) if raw.strip() else {}
        except ValueError:
            return _error(422, "the body is not JSON", field="body")
        if not isinstance(body, dict):
            return _error(422, "the body must be a JSON object", field="body")
        alarm_id = int(request.path_params["alarm_id"])
        try:
            alarm = await run_in_threadpool(_act, engine, action, alarm_id, body)
        except InvalidAction as exc:
            return _error(422, str(exc), field=exc.field)
        except AlarmNotFound as exc:
            return _error(404, str(exc))
        except AlarmConflict as exc:
            return _error(409, str(exc), state=exc.state, alarm=exc.alarm_id)
        return JSONResponse({"id": alarm["id"], "state": alarm["state"], "outcome": alarm["outcome"]})

    return endpoint


def _alarm_page(engine: Engine, alarm_id: int) -> str | None:
    alarm, points = data.alarm_risk(engine, alarm_id)
    if alarm is None:
        return None
    plot = render.sparkline(points, alarm["threshold"], width=720, height=200)
    title = f"alarm {alarm_id} ({html.escape(alarm['machine_id'])}, {alarm['state']})"
    return f"<!doctype html><title>{title}</title><h1>{title}: risk around it</h1>{plot}"


def create_app(engine: Engine, config: ConsoleConfig | None = None) -> Starlette:
    """The console over the readings store `engine`."""
    config, caches = config or ConsoleConfig(), render.Caches()
    ensure_detection_tables(engine)
    ensure_alarm_tables(engine)

    async def index(request: Request) -> Response:
        parts = await run_in_threadpool(fragments, engine, config, caches)
        return HTMLResponse(render.page(config.title, parts, config.poll_s))

    async def live(request: Request) -> Response:
        shown = request.query_params.get("tables")
        return JSONResponse(await run_in_threadpool(fragments, engine, config, caches, None, shown))

    async def metrics(request: Request) -> Response:
        figures = await run_in_threadpool(data.figures, engine, datetime.now(UTC), config.stale_after)
        return PlainTextResponse(data.prometheus_text(figures), media_type="text/plain; version=0.0.4")

    async def alarm(request: Request) -> Response:
        text = await run_in_threadpool(_alarm_page, engine, int(request.path_params["alarm_id"]))
        return HTMLResponse(text) if text else _error(404, "no such alarm")

    async def health(request: Request) -> Response:
        return PlainTextResponse("ok")

    routes = [
        Route("/", index),
        Route("/api/fragments", live),
        Route("/metrics", metrics),
        Route("/healthz", health),
        Route("/alarms/{alarm_id:int}", alarm),
        *(
            Route(
                f"/alarms/{{alarm_id:int}}/{name}", _action_endpoint(engine, config, name), methods=["POST"]
            )
            for name in ("acknowledge", "snooze", "resolve")
        ),
    ]
    return Starlette(routes=routes)
