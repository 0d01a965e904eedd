"""The stack recovers by itself (issue 24): its secrets are its own, a SIGKILLed `bentoml serve` is started
again without a crash loop (its orphaned workers cleared by process tree), and runs caught by a stack crash
are failed and retried once it is back, every reading scored once."""

from __future__ import annotations

import json
import os
import re
import signal
import stat
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psutil
import psycopg
import pytest
import sqlalchemy as sa
from stack_helpers import REPO, ROWS_PER_FILE, Pipeline, RunningStack, generate, runs

from mfd.services.stack import SECRET_NAMES

pytestmark = pytest.mark.integration

EVENTS_QUERY = """
query Events($runId: ID!) {
  runOrError(runId: $runId) {
    ... on Run { eventConnection(afterCursor: null) { events { ... on MessageEvent { message } } } }
  }
}
"""


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_stack_secrets_are_generated_owner_only_and_postgres_wants_a_password(
    running_stack: RunningStack,
) -> None:
    running = running_stack
    stack = running.stack
    secrets = json.loads(stack.secrets_file.read_text())
    assert _mode(stack.secrets_file) == 0o600 and _mode(stack.root / "s3.json") == 0o600
    assert len(set(secrets.values())) == len(SECRET_NAMES) == 5 and all(
        len(value) >= 16 for value in secrets.values()
    )
    assert not {"mfd-stack-key", "mfd-stack-access", "mfd-stack-secret"} & set(secrets.values())
    assert running.env["MFD_API_KEYS"] == secrets["api_key"]
    hba = (stack.pg_data / "pg_hba.conf").read_text()
    methods = {line.split()[-1] for line in hba.splitlines() if line.strip() and not line.startswith("#")}
    assert methods == {"scram-sha-256"}, methods
    for password in (None, "wrong"):
        with pytest.raises(psycopg.OperationalError, match="password"):
            psycopg.connect(
                host="127.0.0.1", port=stack.ports.postgres, user="mfd", dbname="mfd", password=password
            ).close()
    with stack.pg_connect(dbname="mfd") as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)
    # `stack env` gives a shell the stack's settings and the venv's commands.
    shell = (
        f'eval "$({sys.executable} -m mfd.services.stack env)"; command -v mfd dagster; echo "$MFD_API_KEYS"'
    )
    env = {k: v for k, v in running.env.items() if not k.startswith(("MFD_", "PG"))} | {
        "MFD_STACK_HOME": str(stack.root),
        "PATH": "/usr/bin:/bin",
    }
    env.update({k: v for k, v in running.env.items() if k.startswith("MFD_STACK_PORT_")})
    out = subprocess.run(["bash", "-c", shell], env=env, cwd=REPO, capture_output=True, text=True, check=True)
    lines = out.stdout.split()
    venv_bin = str(Path(sys.executable).parent)
    assert lines == [f"{venv_bin}/mfd", f"{venv_bin}/dagster", secrets["api_key"]], out.stdout + out.stderr


def _log_since(running: RunningStack, offset: int) -> str:
    with running.stack.log.open("rb") as log:
        log.seek(offset)
        return log.read().decode(errors="replace")


def test_sigkill_of_bentoml_serve_clears_its_orphans_and_restarts_once(
    running_stack: RunningStack, pipeline: Pipeline
) -> None:
    running = running_stack
    running.wait(running.stack.bento_ready, "bentoml serve ready", timeout=300)
    pid_file = running.stack.run_dir / "bento.pid"
    pid = int(pid_file.read_text())
    workers = psutil.Process(pid).children(recursive=True)
    assert workers, "bentoml serve runs its workers as child processes"
    offset = running.stack.log.stat().st_size
    killed = time.monotonic()
    os.kill(pid, signal.SIGKILL)  # the main process only, as `kill -9` would: its workers are orphaned
    running.wait(
        lambda: int(pid_file.read_text()) != pid and running.stack.bento_ready(),
        "bentoml serve started again and ready",
        timeout=300,
    )
    restored = time.monotonic() - killed
    assert not [w.pid for w in workers if w.is_running() and w.status() != psutil.STATUS_ZOMBIE]
    log = _log_since(running, offset)
    restarts = log.count("bento exited with")
    print(f"\nbentoml serve SIGKILLed: serving again after {restored:.1f} s, {restarts} restart(s)")
    assert restarts == 1, log[-4000:]
    assert "Address already in use" not in log
    assert "leftover process(es) of its tree" in log


def _crash(running: RunningStack) -> int:
    """SIGKILL every process of the stack at once (a power cut, as far as the stack can tell): the
    supervisor, every service's supervisor and process tree, the runs in flight. The processes killed."""
    run_dir = running.stack.run_dir
    honcho = psutil.Process(int((run_dir / "honcho.pid").read_text()))
    doomed = [honcho, *honcho.children(recursive=True)]
    for tree in run_dir.glob("*.tree"):
        for pid, _created in json.loads(tree.read_text()):
            try:
                doomed.append(psutil.Process(pid))
            except psutil.NoSuchProcess:
                pass
    for process in doomed:
        try:
            process.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(doomed, timeout=30)
    return len({p.pid for p in doomed})


def test_resume_after_a_crash_mid_run_fails_and_retries_the_runs_caught_every_reading_scored_once(
    running_stack: RunningStack, pipeline: Pipeline
) -> None:
    running = running_stack
    before = running.scalar("SELECT count(*) FROM readings")
    start = datetime.now(UTC) + timedelta(hours=9)
    out = running.mfd(
        *("generate", "--machines", "10", "--rows", "30000", "--seed", "24", "--sink", "files"),
        *("--file-rows", "30000", "--quiet", "--start", start.strftime("%Y-%m-%dT%H:%M:%SZ")),
        *("--interval", "1"),
    )
    added = int(re.search(r"generated ([\d,]+) readings", out.stdout + out.stderr).group(1).replace(",", ""))
    in_flight = running.wait(
        lambda: [
            r
            for r in runs(running, statuses=["STARTED"])
            if r["jobName"] in ("ingest_readings_job", "prediction_job")
        ],
        "an ingestion or prediction run in flight",
        timeout=600,
    )
    killed = _crash(running)
    up_started = time.monotonic()
    running.stack_cli("up")
    up_s = time.monotonic() - up_started

    def settled() -> dict[str, dict] | None:
        now = {r["runId"]: r for r in runs(running)}
        return (
            now if all(now[r["runId"]]["status"] not in ("STARTED", "STARTING") for r in in_flight) else None
        )

    after_up = running.wait(settled, "the runs caught by the crash leave STARTED", timeout=300)
    left_started_s = time.monotonic() - up_started
    caught = [after_up[r["runId"]] for r in in_flight if after_up[r["runId"]]["status"] == "FAILURE"]
    assert caught, f"every run in flight had finished before the crash: {in_flight}"
    running.wait(
        lambda: (
            not running.stack.s3_client().list_objects_v2(Bucket="mfd", Prefix="incoming/").get("Contents")
            and running.scalar("SELECT count(*) FROM predictions") == before + added
        ),
        "every file ingested and every reading scored after the resume",
        timeout=900,
    )
    assert running.scalar("SELECT count(*) FROM readings") == before + added
    assert running.scalar("SELECT count(DISTINCT reading_id) FROM predictions") == before + added
    ended = {r["runId"]: r for r in runs(running)}
    for run in caught:
        retries = [r for r in ended.values() if r["tags"].get("dagster/parent_run_id") == run["runId"]]
        assert [r["status"] for r in retries] == ["SUCCESS"], (run, retries)
    for run in caught:  # failed by run monitoring through StackRunLauncher's worker check
        events = running.graphql()._execute(EVENTS_QUERY, {"runId": run["runId"]})  # noqa: SLF001
        messages = [e.get("message") or "" for e in events["runOrError"]["eventConnection"]["events"]]
        assert any("worker process" in m and "is gone" in m for m in messages), messages[-5:]
    print(
        f"\nstack crashed ({killed} processes SIGKILLed) with {len(in_flight)} run(s) in flight; `up` took "
        f"{up_s:.1f} s; {len(caught)} run(s) failed by run monitoring, seen {left_started_s:.1f} s after `up` "
        "started, each retried once; every reading scored once"
    )


BACKLOG = 1_000_000  # two backlog runs of 500,000: the small file's runs pass the second


def _insert_backlog(running: RunningStack, rows: int) -> int:
    """`rows` readings copied from the stored ones, each copy 30 days further back (unique keys, still inside
    the plausible window), in one INSERT; the rows written."""
    engine = running.engine()
    try:
        with engine.begin() as conn:
            names = conn.execute(
                sa.text(
                    "SELECT column_name FROM information_schema.columns WHERE table_name = 'readings' "
                    "AND column_name NOT IN ('id', 'source') ORDER BY ordinal_position"
                )
            ).scalars()
            quoted = [f'"{name}"' for name in names]
            values = [
                "r.timestamp - g * interval '30 days'" if q == '"timestamp"' else f"r.{q}" for q in quoted
            ]
            stored = conn.execute(sa.text("SELECT count(*) FROM readings")).scalar()
            return conn.execute(
                sa.text(
                    f"INSERT INTO readings ({', '.join(quoted)}, source) "
                    f"SELECT {', '.join(values)}, 'e2e-backlog' FROM readings r, generate_series(1, :copies) g "
                    "ORDER BY g, r.id LIMIT :rows"
                ),
                {"copies": -(-rows // stored), "rows": rows},
            ).rowcount
    finally:
        engine.dispose()


def test_a_small_file_is_not_starved_behind_a_backlog(
    running_stack: RunningStack, pipeline: Pipeline
) -> None:
    """A backlog of 1,000,000 readings is scored in runs sized to it (more than 20,000 readings each) in
    their own lane, one at a time; a 1,500-row file dropped while they run is scored before the backlog is
    through. The backlog is written straight into `readings` (as `mfd generate --sink database` does):
    copies of the stored readings, weeks back, in one transaction; ingesting a file that large first would
    add minutes to the suite and test nothing more."""
    running = running_stack
    first_big = running.scalar("SELECT max(id) FROM readings") + 1
    big = _insert_backlog(running, BACKLOG)
    last_big = running.scalar("SELECT max(id) FROM readings")
    running.wait(
        lambda: [
            r for r in runs(running, pipelineName="prediction_job") if r["tags"].get("mfd/lane") == "backlog"
        ],
        "backlog runs requested",
        timeout=300,
    )
    small_start = datetime.now(UTC) + timedelta(hours=22.5)
    written = time.monotonic()
    small = generate(
        running, ROWS_PER_FILE, 32, "--start", small_start.strftime("%Y-%m-%dT%H:%M:%SZ"), "--interval", "1"
    )

    def small_scored() -> bool:
        scored = f"SELECT count(*) FROM predictions WHERE reading_id > {last_big}"
        return running.scalar(scored) == small

    running.wait(small_scored, "the small file scored", timeout=900)
    small_s = time.monotonic() - written
    unscored = (
        f"SELECT count(*) FROM readings r WHERE r.id BETWEEN {first_big} AND {last_big} "
        "AND NOT EXISTS (SELECT 1 FROM predictions p WHERE p.reading_id = r.id)"
    )
    waiting = running.scalar(unscored)
    running.wait(lambda: running.scalar(unscored) == 0, "the backlog scored", timeout=1200)
    span = running.scalar(
        "SELECT extract(epoch FROM max(scored_at) - min(scored_at)) FROM predictions "
        f"WHERE reading_id BETWEEN {first_big} AND {last_big}"
    )
    backlog_runs = [
        r for r in runs(running, pipelineName="prediction_job") if r["tags"].get("mfd/lane") == "backlog"
    ]
    print(
        f"\n{big:,} readings in {len(backlog_runs)} backlog run(s) of up to "
        f"{max(int(r['tags']['mfd/rows']) for r in backlog_runs):,}: first to last stored in {float(span):.1f} s "
        f"({big / max(float(span), 1e-9):,.0f} readings/s); a {small:,}-row file dropped meanwhile scored "
        f"{small_s:.1f} s after its upload, {waiting:,} backlog readings still unscored then"
    )
    assert waiting > 0, "the small file was scored only after the whole backlog"
    assert max(int(r["tags"]["mfd/rows"]) for r in backlog_runs) > 20_000, (
        "the backlog was scored in runs of MFD_PREDICTION_BATCH_ROWS (20,000), not sized to it"
    )
    assert running.scalar("SELECT count(DISTINCT reading_id) FROM predictions") == running.scalar(
        "SELECT count(*) FROM readings"
    )
