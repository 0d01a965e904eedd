"""Console benchmark (issue 26): the first page with 1,000 machines and 100,000 alarms in PostgreSQL, and
the acknowledge round trip, against a baseline measured in the same run on the same database.

Seeds a scored fleet (mfd.console.sample: readings, predictions, failure events; alarms opened by
`update_alarms`, the path detection takes), then fills the alarms table to 100,000 rows with resolved ones
(one unresolved alarm per machine and kind is all the lifecycle allows). Serves the real app with uvicorn
in this process and loads it over HTTP:
- page: 50 loads of GET / with nothing changing between them ("quiet"); p95 of the server's time (from the
  request reaching the app to its last body byte handed to the socket: queries, rendering, encoding) and of
  the round trip. Then 50 loads each right after a batch with a new reading of every machine (a batch
  before EACH load: the worst case; a live plant lands one every ~5 s, so about every other 3 s poll sees
  one): every fleet row, every trend and every bumped alarm read and rendered again. Then 20 polls of
  /api/fragments after a batch each, as a page open on the console polls. Baseline: the page's two reads
  (fleet, unresolved alarms) as bare SELECTs, rows fetched.
- update_alarms over two 20,000-reading batches of the 1,000 machines (readings/s).
- acknowledge: 50 POST /alarms/{id}/acknowledge of distinct open alarms; baseline: a bare conditional
  UPDATE of one alarm in its own transaction.
- alarms' share of detection: readings of 100 machines scored by detection (`score_batch`, batch after
  batch) and the same batches' scored frames (what detection holds in memory: reading id, machine, type,
  time, sensors, probability, label, threshold) taken by `update_alarms`; readings/s of detection alone
  and with the alarms' update added (target: <= 10 % fewer), and the alarms asset's own read
  (`read_scored`) beside it.
Run: `.venv/bin/python bench/console.py` (PostgreSQL server binaries from `make deps`).
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import mlflow
import numpy as np
import pandas as pd
import sqlalchemy as sa
from sklearn.ensemble import HistGradientBoostingClassifier

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests" / "console"))
from served import serving  # noqa: E402

from mfd.alarms import read_scored, update_alarms  # noqa: E402
from mfd.alarms.model import ACTIVE  # noqa: E402
from mfd.console.app import ConsoleConfig, create_app  # noqa: E402
from mfd.console.data import ALARM_LIMIT  # noqa: E402
from mfd.console.sample import SampleFleet, seed_fleet  # noqa: E402
from mfd.detection.batches import score_batch  # noqa: E402
from mfd.generator import generate_readings  # noqa: E402
from mfd.modeling.model_io import FailureModel, signature  # noqa: E402
from mfd.modeling.pipeline import MODEL_INPUT_COLUMNS, build_pipeline  # noqa: E402
from mfd.profiles.ai4i_reference import load_ai4i  # noqa: E402
from mfd.schema import LABEL_COLUMN  # noqa: E402
from mfd.services import postgres_server  # noqa: E402
from mfd.services.postgres import Postgres  # noqa: E402
from mfd.storage.readings import create_engine, ensure_tables, insert_readings, read_readings  # noqa: E402
from mfd.storage.tables import alarms, machine_risk  # noqa: E402

MACHINES, ALARMS, LOADS, KEY = 1_000, 100_000, 50, "bench-key"
PAGE_TARGET_MS, ACK_TARGET_MS = 300.0, 100.0


def p95(values: list[float]) -> float:
    return statistics.quantiles(values, n=20)[-1]


def timed(fn: Callable[[], object], times: int) -> list[float]:
    out = []
    for _ in range(times):
        start = time.perf_counter()
        fn()
        out.append((time.perf_counter() - start) * 1000)
    return out


def fill_resolved(engine: sa.Engine, count: int) -> None:
    """`count` resolved alarms spread over the machines and the last 90 days."""
    now = datetime.now(UTC)
    rows = []
    for i in range(count):
        at = now - timedelta(minutes=130 * (i + 1) % (90 * 24 * 60))
        rows.append(
            {
                "machine_id": f"M{i % MACHINES:04d}",
                "kind": "risk",
                "open_key": None,
                "state": "resolved",
                "severity": 1 + i % 3,
                "count": 3 + i % 40,
                "peak_risk": 0.5 + (i % 50) / 100,
                "threshold": 0.5,
                "first_reading_id": i,
                "last_reading_id": i,
                "first_seen": at,
                "last_seen": at,
                "top_features": "[]",
                "nearest_rule": None,
                "opened_at": at,
                "resolved_by": "bench",
                "resolved_at": at + timedelta(hours=1),
                "outcome": ("failure_confirmed", "no_fault_found", "maintenance_done")[i % 3],
                "updated_at": at,
            }
        )
    with engine.begin() as conn:
        for i in range(0, len(rows), 10_000):
            conn.execute(alarms.insert(), rows[i : i + 10_000])


def baseline_reads(engine: sa.Engine) -> None:
    a = alarms.c
    with engine.connect() as conn:
        conn.execute(sa.select(machine_risk)).all()
        conn.execute(sa.select(alarms).where(a.state.in_(ACTIVE)).limit(ALARM_LIMIT)).all()


def alarm_batch(first_id: int, machines: int = MACHINES, per: int = 20) -> pd.DataFrame:
    n = machines * per
    start = datetime.now(UTC)
    return pd.DataFrame(
        {
            "reading_id": range(first_id, first_id + n),
            "machine_id": [f"M{i % machines:04d}" for i in range(n)],
            "machine_type": "L",
            "timestamp": [start + timedelta(seconds=i) for i in range(n)],
            "probability": [0.3 + 0.6 * ((i * 7919) % 100) / 100 for i in range(n)],
            "label": [int(0.3 + 0.6 * ((i * 7919) % 100) / 100 >= 0.5) for i in range(n)],
        }
    )


class ServerTime:
    """ASGI wrapper: each request's server time (ms, until its last body byte is handed to the socket)
    by path."""

    def __init__(self, app: Callable) -> None:
        self.app, self.ms = app, {}

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        start, path = time.perf_counter(), scope["path"]

        async def timed_send(message: dict) -> None:
            await send(message)
            if message["type"] == "http.response.body" and not message.get("more_body"):
                self.ms.setdefault(path, []).append((time.perf_counter() - start) * 1000)

        await self.app(scope, receive, timed_send)


def page_loads(engine: sa.Engine, http: httpx.Client, timer: ServerTime) -> dict[str, list[float]]:
    """Server times of quiet loads, of loads after a batch each, and of polls after a batch each."""
    http.get("/").raise_for_status()  # the first load reads every trend (then kept until a machine's next)
    out = {"cold": list(timer.ms["/"])}
    timer.ms.clear()
    out["round trip"] = timed(lambda: http.get("/").raise_for_status(), LOADS)
    out["quiet"] = list(timer.ms["/"])
    for load in range(LOADS):  # each load right after a batch with a new reading of every machine
        update_alarms(engine, alarm_batch(20_000_000 + load * MACHINES, per=1))
        http.get("/").raise_for_status()
    out["after batch"] = timer.ms["/"][LOADS:]
    shown = http.get("/api/fragments").json()["tables"]
    for poll in range(20):  # a page's poll (with the token of the tables it shows) after a batch each
        update_alarms(engine, alarm_batch(21_000_000 + poll * MACHINES, per=1))
        live = http.get("/api/fragments", params={"tables": shown}).json()
        assert "fleet" in live, "a poll after a batch must bring the changed tables"
        shown = live["tables"]
    out["polls"] = timer.ms["/api/fragments"][1:]
    out["size"] = [len(http.get("/").content)]
    return out


def measure(engine: sa.Engine) -> None:
    with engine.connect() as conn:
        open_ids = [
            int(i)
            for i in conn.execute(
                sa.select(alarms.c.id).where(alarms.c.state == "open").limit(LOADS * 2)
            ).scalars()
        ]
    timer = ServerTime(create_app(engine, ConsoleConfig(api_keys=(KEY,))))
    with serving(timer) as url, httpx.Client(base_url=url, timeout=60) as http:
        loads = page_loads(engine, http, timer)
        headers = {"authorization": f"Bearer {KEY}"}
        ids = iter(open_ids)
        ack_ms = timed(
            lambda: http.post(
                f"/alarms/{next(ids)}/acknowledge", json={"actor": "bench"}, headers=headers
            ).raise_for_status(),
            LOADS,
        )
    base_ms = timed(lambda: baseline_reads(engine), LOADS)
    update_ids = iter(open_ids[LOADS:])

    def bare_update() -> None:
        with engine.begin() as conn:
            conn.execute(
                alarms.update()
                .where(alarms.c.id == next(update_ids), alarms.c.state == "open")
                .values(updated_at=datetime.now(UTC))
            )

    upd_ms = timed(bare_update, LOADS)
    report_page(loads, p95(base_ms))
    print(
        f"acknowledge round trip, {LOADS} distinct alarms: p95 {p95(ack_ms):.1f} ms (median {statistics.median(ack_ms):.1f})"
    )
    print(
        f"  baseline (a bare conditional UPDATE in its own transaction) p95 {p95(upd_ms):.1f} ms -> {p95(ack_ms) / p95(upd_ms):.1f}x"
    )
    print(f"  target <= {ACK_TARGET_MS:.0f} ms: {'met' if p95(ack_ms) <= ACK_TARGET_MS else 'NOT met'}")


def report_page(loads: dict[str, list[float]], base: float) -> None:
    quiet, changed, polls = p95(loads["quiet"]), p95(loads["after batch"]), p95(loads["polls"])
    print(
        f"first page ({MACHINES:,} machines, {ALARMS:,} alarms, {loads['size'][0] / 1024:.0f} kB HTML), "
        f"server time (request in -> last byte out):"
    )
    print(f"  first load after start (every trend read, every row rendered): {loads['cold'][0]:.1f} ms")
    print(
        f"  quiet, {LOADS} loads: p95 {quiet:.1f} ms (median {statistics.median(loads['quiet']):.1f}); "
        f"round trip p95 {p95(loads['round trip']):.1f} ms"
    )
    print(
        f"  {LOADS} loads, a batch with a new reading of all {MACHINES:,} machines landing before EACH load "
        f"(every trend, fleet row and bumped alarm read and rendered again): p95 {changed:.1f} ms (median "
        f"{statistics.median(loads['after batch']):.1f})"
    )
    print(
        f"  {len(loads['polls'])} polls of /api/fragments, a batch before each: p95 {polls:.1f} ms "
        f"(median {statistics.median(loads['polls']):.1f})"
    )
    print(
        f"  baseline (the page's two SELECTs, rows fetched) p95 {base:.1f} ms -> quiet {quiet / base:.1f}x, "
        f"after a batch {changed / base:.1f}x"
    )
    print(
        f"  target p95 <= {PAGE_TARGET_MS:.0f} ms: quiet {'met' if quiet <= PAGE_TARGET_MS else 'NOT met'}, "
        f"a batch before each load {'met' if changed <= PAGE_TARGET_MS else 'NOT met'}"
    )


def bench_model(directory: Path) -> FailureModel:
    """A HistGradientBoosting (100 iterations, as bench/detection.py's champion) on AI4I, loaded as
    detection loads a champion."""
    ai4i = load_ai4i()
    pipeline = build_pipeline(HistGradientBoostingClassifier(max_iter=100, random_state=0))
    pipeline.fit(ai4i, ai4i[LABEL_COLUMN].astype(int))
    inputs = ai4i[list(MODEL_INPUT_COLUMNS)].head(5)
    mlflow.sklearn.save_model(
        pipeline,
        str(directory / "model"),
        serialization_format="cloudpickle",
        pyfunc_predict_fn="predict_proba",
        signature=signature(inputs, pipeline.predict_proba(inputs)),
    )
    return FailureModel("bench-console", "1", 0.5, mlflow.pyfunc.load_model(str(directory / "model")))


def detection_share(pg: Postgres, rows: int, machines: int, batches: int, directory: Path) -> None:
    """Detection's readings/s alone and with the alarms' update of each batch's scored frame."""
    engine = create_engine(pg.create_database("bench_detection_share"))
    ensure_tables(engine)
    insert_readings(engine, generate_readings(machines=machines, rows=rows, seed=0))
    ids = read_readings(engine)["id"].to_numpy()
    model = bench_model(directory)
    detect_s, alarms_s, read_s, readings_n, opened, bumped = 0.0, 0.0, 0.0, 0, 0, 0
    for chunk in np.array_split(ids, batches):
        first, last = int(chunk[0]), int(chunk[-1])
        start = time.perf_counter()
        result = score_batch(engine, model, first, last)
        detect_s += time.perf_counter() - start
        readings_n += result.rows_scored
        known = {k: v for k, v in result.thresholds.items() if k != "all"}
        start = time.perf_counter()  # as prediction_batches does: the scored frame in memory
        report = update_alarms(engine, result.scored, thresholds=known or None)
        alarms_s += time.perf_counter() - start
        opened, bumped = opened + report.opened, bumped + report.bumped
        start = time.perf_counter()
        read_scored(engine, first, last)
        read_s += time.perf_counter() - start
    alone, both = readings_n / detect_s, readings_n / (detect_s + alarms_s)
    print(
        f"alarms' share of detection: {readings_n:,} readings of {machines} machines in {batches} batches "
        f"({opened} alarms opened, {bumped} bumps)"
    )
    print(f"  baseline: detection alone (score_batch) {alone:,.0f} readings/s ({detect_s:.2f} s)")
    print(
        f"  detection + update_alarms of its scored frame {both:,.0f} readings/s (alarms {alarms_s:.2f} s, "
        f"{readings_n / alarms_s:,.0f} readings/s): {100 * (1 - both / alone):.1f} % fewer; target <= 10 %: "
        f"{'met' if both >= 0.9 * alone else 'NOT met'}"
    )
    print(
        f"  the alarms step's read (read_scored: only when detection could not take its batch) {read_s:.2f} s more: "
        f"{100 * (1 - readings_n / (detect_s + alarms_s + read_s) / alone):.1f} % fewer with it"
    )


def main() -> None:
    with postgres_server() as pg:
        engine = create_engine(pg.create_database("bench_console"))
        ensure_tables(engine)
        start = time.perf_counter()
        seed_fleet(engine, SampleFleet(machines=MACHINES, readings_per_machine=12))
        with engine.connect() as conn:
            opened = conn.execute(sa.select(sa.func.count()).select_from(alarms)).scalar_one()
        fill_resolved(engine, ALARMS - opened)
        with engine.connect() as conn:
            total = conn.execute(sa.select(sa.func.count()).select_from(alarms)).scalar_one()
            conn.execute(sa.text("ANALYZE"))
        print(
            f"seeded {MACHINES:,} machines, {total:,} alarms ({opened} unresolved) in {time.perf_counter() - start:.1f} s"
        )
        measure(engine)
        for first_id in (30_000_000, 30_020_000):  # two more batches after the page loads above
            batch = alarm_batch(first_id)
            start = time.perf_counter()
            report = update_alarms(engine, batch)
            took = time.perf_counter() - start
            print(
                f"update_alarms over {len(batch):,} scored readings of {MACHINES:,} machines: {took:.2f} s, "
                f"{len(batch) / took:,.0f} readings/s ({report.opened} opened, {report.bumped} bumped)"
            )
        with tempfile.TemporaryDirectory() as directory:
            detection_share(pg, rows=100_000, machines=100, batches=4, directory=Path(directory))


if __name__ == "__main__":
    main()
