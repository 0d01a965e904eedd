"""Serving benchmark: the BentoML service vs a seeds-style FastAPI server, same model, same machine, one run.

Trains a HistGradientBoosting pipeline on AI4I, registers it as champion in a throw-away MLflow store, starts
both servers on 127.0.0.1 and loads them with `wrk` (concurrency 32, bounded in time and requests):
single-reading requests against both, then 1,000 readings per request against BentoML.
Run: `.venv/bin/python bench/serve.py` (needs the Debian `wrk` package; `make bench` installs it).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import mlflow
from sklearn.ensemble import HistGradientBoostingClassifier

from mfd.modeling.model_io import CHAMPION, log_failure_model
from mfd.modeling.pipeline import MODEL_INPUT_COLUMNS, build_pipeline
from mfd.profiles.ai4i_reference import load_ai4i
from mfd.schema import LABEL_COLUMN
from mfd.services import free_port, stop_process_group, wait_until
from mfd.storage.tracking import connect, experiment_id

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
MODEL = "bench-hgb"
CONNECTIONS, SECONDS, MAX_REQUESTS = 32, 15, 200_000
BATCH_ROWS, BATCH_CONNECTIONS = 1_000, 4

LUA = """
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = [[%(body)s]]
local count, limit = 0, %(limit)d
response = function(status, headers, body)
  count = count + 1
  if count >= limit then wrk.thread:stop() end
end
done = function(s, latency, requests)
  io.write(string.format('RESULT {"requests": %%d, "duration_us": %%d, "non2xx": %%d, "socket_errors": %%d, '
    .. '"p50_us": %%d, "p99_us": %%d}\\n', s.requests, s.duration, s.errors.status,
    s.errors.connect + s.errors.read + s.errors.write + s.errors.timeout,
    latency:percentile(50), latency:percentile(99)))
end
"""


@dataclass(frozen=True)
class Load:
    requests: int
    seconds: float
    non2xx: int
    socket_errors: int
    p50_ms: float
    p99_ms: float
    rows_per_request: int

    @property
    def req_s(self) -> float:
        return self.requests / self.seconds

    @property
    def rows_s(self) -> float:
        return self.req_s * self.rows_per_request


def register_champion(tracking_uri: str, artifacts: Path) -> None:
    experiment = experiment_id(connect(tracking_uri), "bench-serve", artifacts.as_uri())
    df = load_ai4i()
    pipeline = build_pipeline(HistGradientBoostingClassifier(random_state=0))
    pipeline.fit(df[list(MODEL_INPUT_COLUMNS)], df[LABEL_COLUMN].astype(int))
    with mlflow.start_run(experiment_id=experiment):
        _, mv = log_failure_model(pipeline, df, registered_name=MODEL, threshold=0.5)
    mlflow.MlflowClient().set_registered_model_alias(MODEL, CHAMPION, mv.version)


@contextmanager
def server(cmd: list[str], env: dict[str, str], ready_url: str, log: Path) -> Iterator[None]:
    with log.open("wb") as out:
        proc = subprocess.Popen(
            cmd, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        wait_until(lambda: urllib.request.urlopen(ready_url, timeout=2).status == 200, cmd[0], 120, log)
        yield
    finally:
        stop_process_group(proc)


def wrk(url: str, body: str, connections: int, seconds: int, rows: int, workdir: Path) -> Load:
    script = workdir / "post.lua"
    script.write_text(LUA % {"body": body, "limit": MAX_REQUESTS // 2})
    out = subprocess.run(
        ["wrk", "-t2", f"-c{connections}", f"-d{seconds}s", "--timeout", "5s", "-s", str(script), url],
        capture_output=True,
        text=True,
        check=True,
        timeout=seconds + 60,
    ).stdout
    r = json.loads(
        next(line for line in out.splitlines() if line.startswith("RESULT ")).removeprefix("RESULT ")
    )
    return Load(
        r["requests"],
        r["duration_us"] / 1e6,
        r["non2xx"],
        r["socket_errors"],
        r["p50_us"] / 1e3,
        r["p99_us"] / 1e3,
        rows,
    )


def readings(n: int) -> list[dict[str, object]]:
    df = load_ai4i()[list(MODEL_INPUT_COLUMNS)].sample(n, random_state=1, replace=n > 10_000)
    return [
        {k: (str(v) if k == "machine_type" else float(v)) for k, v in row.items()}
        for row in df.to_dict("records")
    ]


def line(name: str, load: Load) -> str:
    return (
        f"{name:<34} {load.req_s:>9.1f} req/s {load.rows_s:>11.0f} rows/s  p50 {load.p50_ms:>7.1f} ms  "
        f"p99 {load.p99_ms:>7.1f} ms  non-2xx {load.non2xx}  socket errors {load.socket_errors}"
    )


def main() -> None:
    if shutil.which("wrk") is None:
        sys.exit("bench/serve.py needs wrk: apt-get install -y wrk (make bench does)")
    load_at_start = os.getloadavg()
    work = Path(tempfile.mkdtemp(prefix="mfd-bench-serve-"))
    tracking_uri = f"sqlite:///{work / 'mlflow.db'}"
    env = {
        **os.environ,
        "MFD_HOME": str(work / "home"),
        "BENTOML_HOME": str(work / "bentoml"),
        "MFD_MLFLOW_TRACKING_URI": tracking_uri,
        "MFD_MODEL_NAME": MODEL,
        "MFD_API_KEYS": "",
        # The same OpenMP setting for both servers (the service sets it by default; see bento/service.py).
        "OMP_NUM_THREADS": "1",
    }
    try:
        register_champion(tracking_uri, work / "artifacts")
        one = json.dumps(readings(1)[0])
        batch = json.dumps({"readings": readings(BATCH_ROWS)})
        fast_port, bento_port = free_port(), free_port()
        fastapi_cmd = [
            str(BIN / "uvicorn"),
            "--app-dir",
            "bench/baselines",
            "fastapi_serve:app",
            "--host",
            "127.0.0.1",
            "--port",
            str(fast_port),
            "--log-level",
            "warning",
        ]
        with server(fastapi_cmd, env, f"http://127.0.0.1:{fast_port}/health", work / "fastapi.log"):
            url = f"http://127.0.0.1:{fast_port}/predict"
            wrk(url, one, CONNECTIONS, 3, 1, work)  # warm-up
            fastapi = wrk(url, one, CONNECTIONS, SECONDS, 1, work)
        bento_cmd = [
            str(BIN / "bentoml"),
            "serve",
            "bento.service:MachineFailureService",
            "--host",
            "127.0.0.1",
            "--port",
            str(bento_port),
        ]
        with server(bento_cmd, env, f"http://127.0.0.1:{bento_port}/readyz", work / "bentoml.log"):
            url = f"http://127.0.0.1:{bento_port}/predict"
            wrk(url, json.dumps({"readings": [json.loads(one)]}), CONNECTIONS, 3, 1, work)  # warm-up
            single = wrk(url, json.dumps({"readings": [json.loads(one)]}), CONNECTIONS, SECONDS, 1, work)
            batched = wrk(url, batch, BATCH_CONNECTIONS, SECONDS, BATCH_ROWS, work)
        print(
            f"model: HistGradientBoosting on AI4I; wrk -t2, {SECONDS}s per run, 127.0.0.1; {os.cpu_count()} cores"
        )
        print(line(f"FastAPI, 1 reading/req, c={CONNECTIONS}", fastapi))
        print(line(f"BentoML, 1 reading/req, c={CONNECTIONS}", single))
        print(line(f"BentoML, {BATCH_ROWS} readings/req, c={BATCH_CONNECTIONS}", batched))
        print(f"ratio single-reading req/s BentoML/FastAPI: {single.req_s / fastapi.req_s:.2f}x")
        print(f"ratio rows/s batched BentoML/FastAPI:        {batched.rows_s / fastapi.rows_s:.1f}x")
        targets = {
            "single >= 5x FastAPI req/s": single.req_s >= 5 * fastapi.req_s,
            "single p99 <= 50 ms": single.p99_ms <= 50,
            "0 non-2xx": single.non2xx + batched.non2xx + single.socket_errors + batched.socket_errors == 0,
            "batched >= 100,000 rows/s": batched.rows_s >= 100_000,
        }
        print(
            "targets: " + "; ".join(f"{name}: {'met' if ok else 'NOT met'}" for name, ok in targets.items())
        )
        print("load average (1, 5, 15 min) at the start: {:.1f} {:.1f} {:.1f}".format(*load_at_start))
        print("load average (1, 5, 15 min) at the end:   {:.1f} {:.1f} {:.1f}".format(*os.getloadavg()))
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
