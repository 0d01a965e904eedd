"""Every command of the README and docs/ runs as written from the repository root of a fresh copy.

The copy holds the working tree's files (tracked and new, not ignored) and shares this `.venv`; PYTHONPATH
points at the copy, so its code and its `.mfd/` are the ones used, as in a clone with its own install. No
other setting is given: a command that needed one would fail here. Long-running servers are started,
asked whether they answer, and stopped; commands that run until Ctrl-C get a SIGINT after a few seconds.
"""

from __future__ import annotations

import os
import select
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from markdown_commands import REPO, documented  # noqa: E402

from mfd.services.processes import group_members  # noqa: E402

CURL = (
    "curl -s -X POST http://127.0.0.1:3001/predict \\\n"
    "  -H 'Authorization: Bearer change-me' -H 'Content-Type: application/json' \\\n"
    "  -d '{\"readings\": [%s]}'"
)
H_READING = (
    '{"machine_type": "H", "air_temperature_k": 302.5, "process_temperature_k": 311.0, '
    '"rotational_speed_rpm": 1300, "torque_nm": 65.0, "tool_wear_min": 230}'
)
L_READING = (
    '{"machine_type": "L", "air_temperature_k": 298.1, "process_temperature_k": 308.6, '
    '"rotational_speed_rpm": 1551, "torque_nm": 42.8, "tool_wear_min": 0}'
)
SERVE = (
    "BENTOML_HOME=.mfd/bentoml MFD_API_KEYS=change-me \\\n"
    "  .venv/bin/bentoml serve bento.service:MachineFailureService --host 127.0.0.1 --port 3001"
)
MATERIALIZE = ".venv/bin/dagster asset materialize -m mfd_assets.definitions"
BENCH = "a benchmark: minutes of measuring, nothing checked (`make bench`)"
STACK = "needs `make stack` running: tests/e2e starts the stack and walks it"


@dataclass(frozen=True)
class Step:
    """One documented command and how the walk runs it."""

    command: str
    how: str = "run"  # run | interrupt | server | paths | python | skip
    why: str = ""  # skip: the reason
    answers: tuple[str, ...] = ()  # server: URLs that must answer while it runs
    port: int = 0  # server: the port it takes
    during: tuple[Step, ...] = field(default=())  # server: commands run while it is up


WALK: tuple[Step, ...] = (
    # docs/generator.md
    Step(".venv/bin/mfd generate"),
    Step(".venv/bin/mfd generate --machines 100 --rows 200000 --sink files --file-rows 50000 --peripheral"),
    Step(".venv/bin/mfd generate --sink db --sink files --seed 7 --start 2026-01-01T00:00:00Z"),
    Step(".venv/bin/mfd generate --machines 20 --rate 20 --sink db", how="interrupt"),
    Step(".venv/bin/mfd generate --machines 1 --rate 1", how="interrupt"),
    Step("MFD_PROFILE=cmapss .venv/bin/mfd generate --rows 5000 --sink files --maintenance"),
    Step(".venv/bin/mfd generate --machines 50 --duration 86400"),
    Step(
        "from mfd.generator import generate_peripheral, generate_readings, iter_readings\n\n"
        "df = generate_readings(machines=50, rows=100_000, seed=1)  # a DataFrame\n"
        "for block in iter_readings(machines=1000, rows=1_000_000, seed=1):  # blocks of ~65,536 rows\n"
        "    ...\n"
        "devices = generate_peripheral(df, seed=1, reading_interval_s=60)",
        how="python",
    ),
    Step(".venv/bin/python bench/generate.py", how="skip", why=BENCH),
    # docs/ingestion.md
    Step(
        ".venv/bin/mfd generate --rows 20000 --sink files --peripheral --seed 3 --start 2026-01-01T00:00:00Z"
    ),
    Step(".venv/bin/mfd ingest incoming/readings-20260101T000000Z-s3-000001.csv"),
    Step(".venv/bin/mfd ingest"),
    Step(
        "import dagster as dg\n"
        "from mfd.cli.main import main as mfd\n"
        "from mfd_assets.ingestion import incoming_files, raw_readings, raw_readings_expectations\n"
        "from mfd_resources import resources_for\n"
        "from mfd.settings import load_settings\n\n"
        'mfd(["generate", "--rows", "2000", "--sink", "files", "--seed", "5", "--start", '
        '"2026-01-02T00:00:00Z"])\n'
        'key = "incoming/readings-20260102T000000Z-s5-000001.csv"  # the file it wrote\n'
        "instance = dg.DagsterInstance.ephemeral()  # or dg.DagsterInstance.get(), the one at DAGSTER_HOME\n"
        "instance.add_dynamic_partitions(incoming_files.name, [key])\n"
        "dg.materialize(\n"
        "    [raw_readings, raw_readings_expectations],\n"
        "    partition_key=key,\n"
        "    resources=resources_for(load_settings()),\n"
        "    instance=instance,\n"
        ")",
        how="python",
    ),
    Step(".venv/bin/python bench/ingest.py", how="skip", why=BENCH),
    Step(".venv/bin/pytest -q tests/ingestion tests/storage", how="paths"),
    # docs/preparation.md
    Step(".venv/bin/mfd generate --rows 20000 --machines 20 --seed 1"),
    Step(f"{MATERIALIZE} \\\n    --select 'training_set,cleaned_set,machine_clusters'"),
    Step(
        f"{MATERIALIZE} \\\n    --select 'training_set,cleaned_set,machine_clusters' \\\n"
        """    --config-json '{"ops": {"training_set": {"config": {"merge_tolerance": "2min"}},\n"""
        """                            "machine_clusters": {"config": {"n_clusters": 6}}}}'"""
    ),
    Step(
        "from mfd.preparation.training_set import build_training_set, read_sources, remove_outliers_iqr\n"
        "from mfd.preparation.clusters import cluster_machines\n"
        "from mfd.storage import readings as store\n\n"
        'engine = store.create_engine("sqlite:///.mfd/readings.db")\n'
        "sources = read_sources(engine)\n"
        'training = build_training_set(sources.labelled(), sources.peripheral, "5min")\n'
        "cleaned, report = remove_outliers_iqr(training, k=1.5)\n"
        "clusters = cluster_machines(cleaned, n_clusters=4)\n"
        "print(report.by_feature, clusters.table)",
        how="python",
    ),
    Step(".venv/bin/pytest -q tests/preparation/test_preparation.py", how="paths"),
    # docs/profiles.md
    Step(".venv/bin/mfd profile list"),
    Step(".venv/bin/mfd profile check docs/examples/compressor-station.yaml"),
    Step(".venv/bin/mfd profile check cmapss"),
    Step("MFD_HOME=.mfd/cmapss .venv/bin/mfd import cmapss --subset FD001"),
    Step("MFD_HOME=.mfd/cmapss .venv/bin/mfd import cmapss mfd/data/cmapss --subset FD001 --split test"),
    # docs/quality.md
    Step(
        f"{MATERIALIZE} \\\n  --select "
        "'training_set,holdout,cleaned_set,augmented_gan,augmented_oversampling,augmented_corruption,quality_scores'"
    ),
    Step(
        f"{MATERIALIZE} --select quality_scores --config-json '\n"
        '{"ops": {"quality_scores": {"config": {\n'
        '  "classifiers": ["RandomForest", "KNN", "GaussianNB"], "folds": 5,\n'
        '  "grids": {"KNN": "{\\"n_neighbors\\": [5, 9, 21]}"}}}}}\''
    ),
    Step(
        f"{MATERIALIZE} --select augmented_corruption --config-json '\n"
        '{"ops": {"augmented_sets": {"config": {\n'
        '  "corruption_kind": "spike", "selection_strategy": "l1",\n'
        '  "selection_reference": "misclassified", "corruption_rows": 2000}}}}\''
    ),
    Step(".venv/bin/python bench/quality.py", how="skip", why=BENCH),
    Step(".venv/bin/python bench/quality.py --naive-sets raw", how="skip", why=BENCH),
    # docs/training.md
    Step(".venv/bin/mfd train --family auto --trials 5 --data ai4i --register --budget 60"),
    Step(".venv/bin/mfd champion show"),
    Step(
        f"{MATERIALIZE} --select candidate_model,champion_model \\\n"
        """  --config-json '{"ops": {"candidate_model": {"config": {"family": "hgb"}}}}'"""
    ),
    Step(".venv/bin/python bench/quality_model.py", how="skip", why=BENCH),
    Step(f"{MATERIALIZE} --select sequence_models"),
    # docs/serving.md
    Step(".venv/bin/mfd train --family hgb --trials 2 --folds 3 --register"),
    Step(
        SERVE,
        how="server",
        port=3001,
        answers=("http://127.0.0.1:3001/readyz",),
        during=(Step(CURL % f"{L_READING}, {H_READING}"),),
    ),
    Step(".venv/bin/python -m mfd.serving.packaging"),
    Step("BENTOML_HOME=.mfd/bentoml .venv/bin/bentoml build -f bento/bentofile.yaml ."),
    Step("BENTOML_HOME=.mfd/bentoml .venv/bin/bentoml list"),
    Step(
        ".venv/bin/bentoml containerize machine_failure:latest -t mfd-serving:latest",
        how="skip",
        why="Docker",
    ),
    Step(
        "docker run --rm -p 3001:3000 -e MFD_MLFLOW_TRACKING_URI=http://mlflow:5000 -e MFD_API_KEYS=change-me "
        "mfd-serving:latest",
        how="skip",
        why="Docker",
    ),
    Step(".venv/bin/python bench/serve.py", how="skip", why=BENCH),
    # docs/detection.md
    Step(".venv/bin/mfd events --since 10m --limit 50"),
    Step(".venv/bin/python bench/detection.py [--freshness-minutes 5]", how="skip", why=BENCH),
    # README.md
    Step("make help"),
    Step(f"{MATERIALIZE} --select 'training_set*'"),
    Step(".venv/bin/dagster job execute -m mfd_assets.definitions -j training_job"),
    Step(".venv/bin/mfd --help"),
    Step(".venv/bin/mfd --version"),
    Step(".venv/bin/mfd generate --machines 20 --rows 20000 --sink files"),
    Step(".venv/bin/mfd ingest"),
    Step(".venv/bin/mfd train --family hgb --trials 2 --folds 3"),
    Step(".venv/bin/mfd champion show"),
    Step(".venv/bin/mfd events --since 10m"),
    Step(
        SERVE,
        how="server",
        port=3001,
        answers=("http://127.0.0.1:3001/readyz",),
        during=(Step(CURL % H_READING),),
    ),
    Step(
        "make dev",
        how="server",
        port=3000,
        answers=("http://127.0.0.1:3000/server_info", "http://127.0.0.1:5000/health"),
    ),
    Step("make run", how="skip", why="test_make_run.py runs it on a fresh copy, then reopens the UI"),
    Step("make test", how="skip", why="the suite this walk is part of (CI runs it: .ci/run)"),
    Step(".venv/bin/python -m mfd.registry.retag <name> <version>", how="skip", why="placeholders"),
    # README "Operating mfd": the production stack on this machine; tests/e2e starts and checks it.
    *(
        Step(command, how="skip", why=STACK)
        for command in (
            "make stack",
            ".venv/bin/python -m mfd.services.stack status",
            'eval "$(.venv/bin/python -m mfd.services.stack env)"',
            ".venv/bin/python deploy/graphql/runs.py materialize training_set cleaned_set holdout",
            ".venv/bin/python deploy/graphql/runs.py launch training_job \\\n"
            """  --config '{"ops": {"candidate_model": {"config": {"family": "hgb", "folds": 3, "trials": 3}}}}'""",
            ".venv/bin/python deploy/graphql/runs.py status <run id> --wait 600",
            ".venv/bin/python deploy/graphql/runs.py events candidate_model",
            "for db in mfd mlflow dagster; do pg_dump -h 127.0.0.1 -p 5433 -U mfd -Fc -f backup-$db.dump $db; done",
            "pg_restore -h 127.0.0.1 -p 5433 -U mfd -d mfd --clean backup-mfd.dump",
            "aws --endpoint-url http://127.0.0.1:8333 s3 sync s3://mfd ./backup-mfd",
            "aws --endpoint-url http://127.0.0.1:8333 s3 sync s3://mfd-mlflow ./backup-mfd-mlflow",
            "make stop",
        )
    ),
    # docs/operating.md "Celery workers", "Retention": the stack's instance, bucket and broker (tests/scale runs them)
    *(
        Step(command, how="skip", why=STACK)
        for command in (
            "export MFD_CELERY_BROKER_URL=redis://redis:6379/0 MFD_CELERY_BACKEND_URL=redis://redis:6379/1",
            "export DAGSTER_HOME=/srv/dagster",
            "dagster-celery worker start -A dagster_celery.app -y deploy/celery/celery.yaml -n w1 -- --pool=solo",
            "python deploy/celery/run.py main_job",
            "DAGSTER_HOME=.mfd/stack/dagster python deploy/dagster/prune_runs.py --dry-run",
            "DAGSTER_HOME=.mfd/stack/dagster python deploy/dagster/prune_runs.py --days 90 --failed-days 365",
            "mfd partitions sync",
            "mfd partitions list",
            "mfd partitions archive --keep-months 13",
            "mfd partitions archive --month 2026-01",
            "mfd partitions restore --month 2026-01",
        )
    ),
    Step(".venv/bin/python bench/streaming.py", how="skip", why=BENCH),
    # last: its malformed files make every later `mfd ingest` exit 1 (as documented)
    Step(".venv/bin/mfd generate --sink files --rows 20000 --bad-rate 0.05"),
)


def _flat(steps: tuple[Step, ...]) -> list[Step]:
    return [s for step in steps for s in (step, *_flat(step.during))]


def test_every_documented_command_is_walked() -> None:
    """The walk lists each command of the markdown exactly as often as the markdown has it."""
    docs = documented()
    walked = _flat(WALK)
    assert Counter(s.command for s in walked if s.how != "python") == Counter(docs["bash"])
    assert Counter(s.command for s in walked if s.how == "python") == Counter(docs["python"])


def _copy_of_the_checkout(root: Path) -> Path:
    files = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=REPO,
        capture_output=True,
        check=True,
    ).stdout.split(b"\0")
    for name in filter(None, (f.decode() for f in files)):
        source = REPO / name
        if source.is_file() and not source.is_symlink():
            (root / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, root / name)
    (root / ".venv").symlink_to(REPO / ".venv")
    # The shared .venv is installed: make must not reinstall it into this copy (pip -e would repoint it).
    marker = (REPO / ".venv" / "bin" / ".installed").stat().st_mtime
    os.utime(root / "pyproject.toml", (marker - 1, marker - 1))
    return root


def _env(root: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MFD_", "DAGSTER_", "BENTOML_"))}
    return {**env, "PYTHONPATH": str(root)}


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) != 0


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=5):
            return True
    except urllib.error.HTTPError:
        return True  # it answered
    except OSError:
        return False


def _tail(result: subprocess.CompletedProcess[str] | tuple[str, str]) -> str:
    out, err = (result.stdout, result.stderr) if not isinstance(result, tuple) else result
    return "\n".join((out.strip().splitlines() + err.strip().splitlines())[-15:])


def _stop(process: subprocess.Popen[str]) -> tuple[str, str]:
    """Ctrl-C to the command's process group, as a terminal sends it; SIGTERM, then SIGKILL, to whatever of
    the group is still alive (the command and every child it left, e.g. a code server) when it lingers."""
    output = None
    for sig, wait in ((signal.SIGINT, 60), (signal.SIGTERM, 20), (signal.SIGKILL, 10)):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            break
        try:
            output = output or process.communicate(timeout=wait)
        except subprocess.TimeoutExpired:
            continue
        deadline = time.monotonic() + wait
        while group_members(process.pid) and time.monotonic() < deadline:
            time.sleep(0.5)
        if not group_members(process.pid):
            break
    return output or process.communicate()


def _wait_until_streaming(root: Path, process: subprocess.Popen[str], timeout_s: float = 30) -> None:
    """Until the streaming generator has written to its sink (readings.db, incoming/ or its stdout), at most
    `timeout_s`, plus a few seconds: a reader presses Ctrl-C on a running stream, not on an interpreter still
    importing (under load a Ctrl-C 4 s after the start was once not answered within a minute)."""
    started = time.time()
    sinks = [root / ".mfd" / "readings.db", root / "incoming"]
    while time.time() < started + timeout_s and process.poll() is None:
        written = [p for sink in sinks if sink.exists() for p in (sink, *sink.glob("*")) if p.is_file()]
        if any(p.stat().st_mtime > started for p in written) or select.select([process.stdout], [], [], 0)[0]:
            break
        time.sleep(0.5)
    time.sleep(3)


def _run(step: Step, root: Path, env: dict[str, str]) -> str | None:
    """None when the step worked as documented, else what went wrong."""
    if step.how == "skip":
        return None
    if step.how == "paths":
        missing = [
            a for a in shlex.split(step.command)[1:] if not a.startswith("-") and not (root / a).exists()
        ]
        return f"no such test path: {missing}" if missing else None
    if step.how == "python":
        result = subprocess.run(
            [str(root / ".venv/bin/python"), "-c", step.command],
            cwd=root,
            env=env,
            capture_output=True,
            text=True,
            timeout=900,
            check=False,
        )
        return None if result.returncode == 0 else f"exit {result.returncode}:\n{_tail(result)}"
    if step.how == "run":
        result = subprocess.run(
            ["bash", "-c", step.command],
            cwd=root,
            env=env,
            capture_output=True,
            text=True,
            timeout=1800,
            check=False,
        )
        return None if result.returncode == 0 else f"exit {result.returncode}:\n{_tail(result)}"
    if step.how in ("server", "interrupt") and step.port and not _port_free(step.port):
        pytest.skip(f"port {step.port} is taken on this machine")  # never on CI
    process = subprocess.Popen(
        ["bash", "-c", step.command],
        cwd=root,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        if step.how == "interrupt":
            _wait_until_streaming(root, process)
            out, err = _stop(process)
            worked = process.returncode == 0 and "interrupted" in out
            return None if worked else f"exit {process.returncode} after SIGINT:\n{_tail((out, err))}"
        deadline = time.monotonic() + 180
        pending = list(step.answers)
        while pending and time.monotonic() < deadline and process.poll() is None:
            pending = [url for url in pending if not _answers(url)]
            time.sleep(1)
        if pending:
            return f"{', '.join(pending)} did not answer"
        problems = [f"{s.command}: {p}" for s in step.during if (p := _run(s, root, env))]
        if problems:
            return "\n".join(problems)
    finally:
        out, err = _stop(process)
        if step.how == "server" and process.returncode not in (0, -signal.SIGINT, 130, 1):
            print(f"{step.command} stopped with {process.returncode}:\n{_tail((out, err))}")
    if step.how == "server":  # Ctrl-C stopped all of it (`make dev`: the MLflow UI too)
        time.sleep(2)
        still = [url for url in step.answers if _answers(url)]
        if still:
            return f"still answering after Ctrl-C: {', '.join(still)}"
    return None


@pytest.mark.docs_walk
@pytest.mark.timeout(7200)
def test_documented_commands_work_verbatim(tmp_path: Path) -> None:
    root = _copy_of_the_checkout(tmp_path / "mfd")
    env = _env(root)
    failures = []
    for step in WALK:
        started = time.monotonic()
        try:
            problem = _run(step, root, env)
        except subprocess.TimeoutExpired as exc:
            problem = f"still running after {exc.timeout:.0f} s"
        verdict = "FAILED" if problem else "ok"
        print(f"{time.monotonic() - started:6.1f} s {verdict:6} {step.how:9} {step.command.splitlines()[0]}")
        if problem:
            print(f"    {problem}", flush=True)
            failures.append(f"{step.command}\n  -> {problem}")
    assert not failures, "\n\n".join(failures)
    assert not (root / ".mfd").is_symlink() and (root / ".mfd" / "readings.db").exists()
