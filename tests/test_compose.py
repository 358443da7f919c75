"""Static checks of docker-compose.yaml and Dockerfile (no Docker engine needed: parse only)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
COMPOSE = REPO / "docker-compose.yaml"

AIRFLOW_SERVICES = {
    "airflow-apiserver",
    "airflow-scheduler",
    "airflow-dag-processor",
    "airflow-worker",
    "airflow-triggerer",
    "airflow-init",
}
OTHER_SERVICES = {"postgres", "redis", "staging-db", "prod-db"}


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    doc = yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))
    assert isinstance(doc, dict)
    return doc


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, Any]:
    return compose["services"]


def _requirements() -> dict[str, str]:
    pins: dict[str, str] = {}
    for line in (REPO / "requirements.txt").read_text(encoding="utf-8").splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, _, version = line.partition("==")
            assert version, f"requirements.txt: {line!r} is not pinned with =="
            pins[_norm(name)] = version.strip()
    return pins


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _env(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):  # ["KEY=value", ...]
        env = dict(item.split("=", 1) for item in env)
    return {str(k): str(v) for k, v in env.items()}


def _bind_mounts(service: dict[str, Any]) -> list[tuple[str, str]]:
    mounts = []
    for vol in service.get("volumes") or []:
        if isinstance(vol, dict):
            source, target = str(vol.get("source", "")), str(vol.get("target", ""))
        else:
            source, _, rest = str(vol).partition(":")
            target = rest.split(":", 1)[0]
        mounts.append((source, target))
    return mounts


def test_services_present(services: dict[str, Any]) -> None:
    missing = (AIRFLOW_SERVICES | OTHER_SERVICES) - set(services)
    assert not missing, f"services missing from docker-compose.yaml: {sorted(missing)}"


def test_airflow_services_share_the_common_block(services: dict[str, Any]) -> None:
    for name in AIRFLOW_SERVICES:
        svc = services[name]
        assert svc.get("build") == ".", f"{name} does not build the project's Dockerfile"
        env = _env(svc)
        assert env.get("AIRFLOW__CORE__EXECUTOR") == "CeleryExecutor", name
        assert "/opt/airflow/include" in env.get("PYTHONPATH", "").split(":"), name
        assert env.get("MIGRATION_STORE", "").startswith("file:///opt/airflow/"), name


def test_mounted_host_paths_exist(compose: dict[str, Any], services: dict[str, Any]) -> None:
    named = set((compose.get("volumes") or {}).keys())
    for name, svc in services.items():
        for source, target in _bind_mounts(svc):
            assert target.startswith("/"), (
                f"{name}: volume {source}:{target} has no absolute target"
            )
            if source.startswith((".", "/", "~", "$")):
                path = (REPO / source).resolve()
                assert path.exists(), f"{name}: host path {source} is not in the repository"
                assert REPO in path.parents or path == REPO, f"{name}: {source} is outside the repo"
            else:
                assert source in named, f"{name}: named volume {source!r} is not declared"


def test_project_code_is_mounted(services: dict[str, Any]) -> None:
    mounts = dict((t, s) for s, t in _bind_mounts(services["airflow-worker"]))
    assert mounts.get("/opt/airflow/dags") == "./dags"
    assert mounts.get("/opt/airflow/plugins") == "./plugins"
    assert mounts.get("/opt/airflow/include") == "./include"
    assert "/opt/airflow/migrations" in mounts


def test_connections_point_at_demo_databases(services: dict[str, Any]) -> None:
    env = _env(services["airflow-worker"])
    for var, host in (
        ("AIRFLOW_CONN_MIGRATION_SOURCE", "staging-db"),
        ("AIRFLOW_CONN_MIGRATION_TARGET", "prod-db"),
    ):
        url = urlsplit(env[var])
        assert url.scheme in ("postgresql", "postgres"), var
        assert url.hostname == host, f"{var} points at {url.hostname}, not {host}"
        db_env = _env(services[host])
        assert url.username == db_env["POSTGRES_USER"], var
        assert url.password == db_env["POSTGRES_PASSWORD"], var
        assert url.path.lstrip("/") == db_env["POSTGRES_DB"], var


def test_depends_on_known_services(services: dict[str, Any]) -> None:
    for name, svc in services.items():
        deps = svc.get("depends_on") or {}
        for dep in deps if isinstance(deps, list) else deps.keys():
            assert dep in services, f"{name} depends on unknown service {dep!r}"


def test_dockerfile_matches_requirements() -> None:
    dockerfile = REPO / "Dockerfile"
    assert dockerfile.is_file(), "Dockerfile is missing (docker-compose.yaml builds '.')"
    text = dockerfile.read_text(encoding="utf-8")
    pins = _requirements()
    base = re.search(r"^FROM\s+apache/airflow:(\S+)", text, re.M)
    assert base, "Dockerfile does not start FROM apache/airflow:<version>"
    assert base.group(1) == pins["apache-airflow"], "base image and requirements.txt disagree"
    assert "postgresql-client" in text
    installed = dict(
        (_norm(n), v) for n, v in re.findall(r"[\"']?([A-Za-z0-9_.\-]+)==([^\s\"']+)", text)
    )
    assert "zstandard" in installed, "Dockerfile does not install zstandard"
    for name, version in installed.items():
        assert pins.get(name) == version, (
            f"Dockerfile pins {name}=={version}, requirements.txt {pins.get(name)}"
        )
