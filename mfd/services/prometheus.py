"""Debian's Prometheus for `make stack`: the shipped config (deploy/prometheus/prometheus.yml) with the
stack's ports as targets, the shipped alert rules (deploy/prometheus/alerts.yml) and a key for the Bento
service's /metrics, written under the stack's state."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import yaml

from mfd.errors import MfdError

DEPLOY = Path(__file__).resolve().parents[2] / "deploy" / "prometheus"
CONFIG = DEPLOY / "prometheus.yml"
RULES = DEPLOY / "alerts.yml"
STACK_INTERVAL = "5s"  # the stack's sensors tick every 5 s; the shipped file's 15 s is for a plant


def prometheus_binary() -> str:
    """`prometheus` on PATH (Debian's package); MfdError when missing."""
    found = shutil.which("prometheus") or (
        "/usr/bin/prometheus" if Path("/usr/bin/prometheus").exists() else None
    )
    if not found:
        raise MfdError("prometheus not found: install Debian's prometheus (make deps does)")
    return found


def _secret_file(path: Path, text: str) -> Path:
    with os.fdopen(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as out:
        out.write(text)
    return path


def stack_config(root: Path, targets: dict[str, str], api_key: str, own: str) -> Path:
    """prometheus.yml under `root`: the shipped scrape jobs pointed at `targets` (job name -> host:port),
    Prometheus itself at `own`, the shipped rules, every 5 s; the Bento job presents `api_key` from a 0600
    file. The file's path."""
    config = yaml.safe_load(CONFIG.read_text())
    root.mkdir(parents=True, exist_ok=True)
    key_file = _secret_file(root / "bento-api-key", api_key)
    config["global"] = {"scrape_interval": STACK_INTERVAL, "evaluation_interval": STACK_INTERVAL}
    config["rule_files"] = [str(RULES)]
    jobs = []
    for job in config["scrape_configs"]:
        if job["job_name"] not in targets:
            raise MfdError(f"{CONFIG} scrapes {job['job_name']!r}, which the stack does not run")
        job = {**job, "static_configs": [{"targets": [targets[job["job_name"]]]}]}
        if job["job_name"] == "mfd-bento":
            job["authorization"] = {"credentials_file": str(key_file)}
        jobs.append(job)
    jobs.append({"job_name": "prometheus", "static_configs": [{"targets": [own]}]})
    config["scrape_configs"] = jobs
    path = root / "prometheus.yml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def command(config: Path, data: Path, listen: str) -> list[str]:
    """The prometheus command line: `config`, its TSDB under `data`, listening on `listen` (host:port)."""
    return [
        prometheus_binary(),
        f"--config.file={config}",
        f"--storage.tsdb.path={data}",
        f"--web.listen-address={listen}",
        "--log.level=warn",  # its start-up notes would fill the stack's log
    ]
