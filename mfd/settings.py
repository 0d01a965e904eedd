"""Every setting, read from `MFD_*` environment variables; defaults are the embedded stack under `.mfd/`."""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Literal

from pydantic import Field, ValidationError, computed_field
from pydantic_settings import BaseSettings, SettingsConfigDict

from mfd.errors import MfdError
from mfd.profiles import DEFAULT_PROFILE
from mfd.schema import PROFILE
from mfd.validation import TimestampWindow


def project_home() -> Path:
    """`.mfd/` in the project checkout holding this package (wherever the command runs from); `.mfd/` in
    the working directory when mfd is installed as a package outside a checkout. A plant profile other than
    the default keeps its own state beside it, `.mfd/profiles/<name>/` (a store holds one profile's data)."""
    checkout = Path(__file__).resolve().parents[1]
    home = (checkout if (checkout / "pyproject.toml").is_file() else Path.cwd()) / ".mfd"
    return home if PROFILE.name == DEFAULT_PROFILE else home / "profiles" / PROFILE.name


class Settings(BaseSettings):
    """Embedded defaults need nothing running; set the production variables to use real services."""

    model_config = SettingsConfigDict(env_prefix="MFD_", env_file=".env", extra="ignore")

    deployment: Literal["local", "production"] = Field(
        "local", description="`production` requires the PostgreSQL, S3 and MLflow settings below."
    )
    home: Path = Field(default_factory=project_home, description="Directory of the embedded state.")
    database_url: str | None = Field(
        None, description="SQLAlchemy URL of the readings database, e.g. postgresql+psycopg://u:p@host/db."
    )
    s3_bucket: str | None = Field(None, description="Bucket holding incoming/, processed/, rejected/.")
    s3_endpoint_url: str | None = Field(None, description="S3 endpoint (MinIO), e.g. http://minio:9000.")
    s3_region: str = Field("us-east-1", description="S3 region name.")
    s3_access_key_id: str | None = Field(None, description="S3 access key id.")
    s3_secret_access_key: str | None = Field(None, description="S3 secret access key.")
    s3_prefix: str = Field("", description="Key prefix inside the bucket, e.g. csv-data/.")
    mlflow_tracking_uri: str | None = Field(
        None, description="MLflow tracking server, e.g. http://mlflow:5000."
    )
    model_name: str = Field("mfd-failure-classifier", description="Registered model name in MLflow.")
    conflict_policy: Literal["reject", "replace"] = Field(
        "reject",
        description="Ingestion: a row whose (timestamp, machine_id) is stored with other values is set aside "
        "beside the file (`reject`) or replaces the stored row, its old values kept in reading_revisions "
        "(`replace`).",
    )
    max_file_bytes: int = Field(
        512 * 2**20,
        description="Ingestion: an incoming file larger than this many bytes (default 512 MiB, about 7M "
        "readings) is rejected unread, rule file_too_large, and filed under rejected/ with its reason.",
        gt=0,
    )
    prediction_batch_rows: int = Field(
        20_000, description="Detection: most readings one prediction_batches run scores.", gt=0
    )
    prediction_runs_per_tick: int = Field(
        5, description="Detection: most runs prediction_sensor requests per tick when catching up.", gt=0
    )
    api_keys: str = Field(
        "",
        description="Serving: comma-separated API keys; when set, every non-health route needs one; "
        "required in production (the service refuses to start without).",
    )
    reload_interval_s: float = Field(
        30.0, description="Serving: seconds between checks of the champion alias (0 disables polling)."
    )
    max_request_bytes: int = Field(2_000_000, description="Serving: larger request bodies get 413.")
    max_readings: int = Field(10_000, description="Serving: more readings in one request get 413.")
    timestamp_min: datetime = Field(
        datetime(2000, 1, 1, tzinfo=UTC),
        description="Ingestion: earliest plausible reading time (ISO 8601; without an offset, UTC).",
    )
    timestamp_max_ahead: timedelta = Field(
        timedelta(days=1),
        description="Ingestion: how far past the clock a reading may lie (ISO 8601 duration, e.g. P1D, or seconds).",
        ge=timedelta(0),
    )
    service_url: str | None = Field(
        None, description="URL of the running BentoML service, e.g. http://bento:3000; the sensor reloads it."
    )
    webhook_urls: str = Field(
        "", description="Alerts: comma-separated webhook URLs that get each failure alert as generic JSON."
    )
    slack_webhook_urls: str = Field(
        "", description="Alerts: comma-separated Slack incoming-webhook URLs (a Slack-compatible body)."
    )
    alert_dedup_window_s: float = Field(
        900.0,
        description="Alerts: a machine's alerts within this many seconds after one are suppressed.",
        ge=0,
    )
    webhook_timeout_s: float = Field(5.0, description="Alerts: seconds a webhook may take to answer.", gt=0)
    retrain_new_labels: int = Field(
        1000,
        description="Retraining: labelled readings beyond the champion's training set that start a run.",
        gt=0,
    )
    retrain_every: timedelta = Field(
        timedelta(days=7),
        description="Retraining: the schedule, a run when none started for this long (ISO 8601 duration).",
        gt=timedelta(0),
    )
    retrain_drift_cooldown: timedelta = Field(
        timedelta(hours=12), description="Retraining: least time between two runs started by drift."
    )
    retrain_labels_cooldown: timedelta = Field(
        timedelta(hours=6), description="Retraining: least time between two runs started by new labels."
    )

    def check_deployment(self) -> None:
        """In production every service must be configured; name the variables that are missing."""
        if self.deployment != "production":
            return
        required = {
            "MFD_DATABASE_URL": self.database_url,
            "MFD_S3_BUCKET": self.s3_bucket,
            "MFD_S3_ENDPOINT_URL": self.s3_endpoint_url,
            "MFD_MLFLOW_TRACKING_URI": self.mlflow_tracking_uri,
        }
        missing = [name for name, value in required.items() if not value]
        if missing:
            raise MfdError(f"MFD_DEPLOYMENT=production needs {', '.join(missing)} (see .env.example)")

    def timestamp_window(self) -> TimestampWindow:
        """The plausible window of reading times, for the rule table (`mfd.validation`)."""
        return TimestampWindow(earliest=self.timestamp_min, ahead=self.timestamp_max_ahead)

    @computed_field  # type: ignore[prop-decorator]
    @property
    def readings_url(self) -> str:
        return self.database_url or f"sqlite:///{self.home / 'readings.db'}"

    @computed_field  # type: ignore[prop-decorator]
    @property
    def objects_dir(self) -> Path:
        return self.home / "objects"

    @computed_field  # type: ignore[prop-decorator]
    @property
    def tracking_uri(self) -> str:
        return self.mlflow_tracking_uri or f"sqlite:///{self.home / 'mlflow.db'}"

    @computed_field  # type: ignore[prop-decorator]
    @property
    def artifacts_dir(self) -> Path:
        return self.home / "mlartifacts"

    @computed_field  # type: ignore[prop-decorator]
    @property
    def bentoml_home(self) -> Path:
        """BentoML's store (models, bentos): BENTOML_HOME when set, else beside the other state."""
        return Path(os.environ.get("BENTOML_HOME") or self.home / "bentoml").absolute()


def _first_invalid_setting(error: ValidationError) -> str:
    """The first invalid setting as `MFD_NAME=value: what is wrong`."""
    first = error.errors()[0]
    name = "MFD_" + "_".join(str(part) for part in first["loc"]).upper()
    return f"{name}={first.get('input')!s}: {first['msg']} (see .env.example)"


def load_settings() -> Settings:
    """Settings from the environment (and `.env` if present), the same for every entry point (CLI, code
    location, service): a bad value or an incomplete `MFD_DEPLOYMENT=production` is one MfdError line.
    BentoML's store follows MFD_HOME unless BENTOML_HOME is set (for this process and what it starts)."""
    try:
        settings = Settings()
    except ValidationError as exc:
        raise MfdError(_first_invalid_setting(exc)) from None
    settings.check_deployment()
    os.environ.setdefault("BENTOML_HOME", str(settings.bentoml_home))
    return settings
