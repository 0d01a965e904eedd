"""bento/bentofile.yaml is generated from the code: the service's import closure and pyproject's pins."""

from __future__ import annotations

import tomllib

import yaml

from mfd.serving.packaging import (
    BENTOFILE,
    REGENERATE,
    REPO_ROOT,
    bentofile,
    import_closure,
    render_bentofile,
)


def test_committed_bentofile_is_the_generated_one() -> None:
    assert BENTOFILE.read_text() == render_bentofile(bentofile()), (
        f"bento/bentofile.yaml is stale (the service's imports or pyproject's pins changed): run `{REGENERATE}`"
    )


def test_include_is_the_service_import_closure() -> None:
    files, external = import_closure()
    # What the service and the unpickled model need, with the package __init__ files on the way ...
    for needed in (
        "bento/service.py",
        "mfd/__init__.py",
        "mfd/registry/__init__.py",
        "mfd/registry/champion.py",
        "mfd/serving/champion.py",
        "mfd/serving/compat.py",
        "mfd/modeling/pipeline.py",
        "mfd/modeling/tree_predictor.py",
        "mfd/features.py",
    ):
        assert needed in files, needed
    # ... and nothing it does not import: no packaging, training, Dagster wiring or tests.
    for unneeded in ("mfd/serving/packaging.py", "mfd/modeling/tuning.py", "mfd/registry/promotion.py"):
        assert unneeded not in files, unneeded
    assert not [f for f in files if not f.startswith(("mfd/", "bento/"))]
    assert {"bentoml", "mlflow", "sklearn", "pandas", "pydantic"} <= external
    assert "dagster" not in external and "mfd" not in external and "os" not in external


def test_packages_are_pyprojects_pins_for_what_the_service_imports() -> None:
    declared = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    packages = yaml.safe_load(BENTOFILE.read_text())["python"]["packages"]
    assert set(packages) <= set(declared)
    names = {p.split(">")[0].split("=")[0].split("<")[0] for p in packages}
    # shap for /explain; matplotlib because the calibrated model's module draws its reliability plot;
    # threadpoolctl because scoring holds each chunk's thread to one OpenMP thread; sqlalchemy, psycopg and
    # pyarrow because /predict_machine reads a machine's stored history from the readings store
    assert names == {
        "bentoml",
        "mlflow",
        "scikit-learn",
        "pandas",
        "pydantic",
        "pydantic-settings",
        "shap",
        "matplotlib",
        "threadpoolctl",
        "sqlalchemy",
        "psycopg[binary]",
        "pyarrow",
    }


def test_the_data_the_service_reads_ships_with_it() -> None:
    include = bentofile()["include"]
    # the sampled explainer of a non-tree champion takes its background rows from the vendored AI4I file
    assert "mfd/profiles/ai4i_reference.py" in include
    assert "mfd/data/ai4i2020.csv" in include and "mfd/data/README.md" in include
    # the service reads the shipped plant profiles (MFD_PROFILE names one)
    assert {"mfd/profiles/ai4i.yaml", "mfd/profiles/cmapss.yaml"} <= set(include)
