"""Static checks of docker-compose.yaml and Dockerfile (no Docker engine needed: parse only)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from tests.airflowtools import airflow_env

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


def _default(value: str) -> str:
    """The value compose uses when the variable is unset: ``${VAR:-default}`` -> ``default``."""
    m = re.fullmatch(r"\$\{[A-Za-z_][A-Za-z0-9_]*:?-(.*)\}", value)
    return m.group(1) if m else value


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
        assert _default(env.get("MIGRATION_STORE", "")).startswith("file:///opt/airflow/"), name


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


def _container_to_host(services: dict[str, Any], service: str, container_path: str) -> Path:
    """The repository file a container path of ``service`` comes from (through its bind mounts)."""
    for source, target in _bind_mounts(services[service]):
        if source.startswith(".") and (container_path + "/").startswith(target.rstrip("/") + "/"):
            return (REPO / source / container_path[len(target) :].lstrip("/")).resolve()
    raise AssertionError(f"{service}: {container_path} is not under a bind mount")


def test_celery_stack(services: dict[str, Any]) -> None:
    env = _env(services["airflow-worker"])
    assert urlsplit(env["AIRFLOW__CELERY__BROKER_URL"]).hostname == "redis"
    assert env["AIRFLOW__CELERY__RESULT_BACKEND"].startswith("db+postgresql://")
    assert "celery worker" in str(services["airflow-worker"]["command"])
    for name in AIRFLOW_SERVICES:  # the workers' task tokens are checked by the api-server
        assert _env(services[name]).get("AIRFLOW__API_AUTH__JWT_SECRET"), name
    assert "execution" in env["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"]


def test_init_creates_the_units_pool(services: dict[str, Any]) -> None:
    command = "\n".join(map(str, services["airflow-init"]["command"]))
    assert "airflow pools set migration_units" in command
    assert "_AIRFLOW_DB_MIGRATE" in _env(services["airflow-init"])


def test_ports_on_loopback(services: dict[str, Any]) -> None:
    for name, svc in services.items():
        for port in svc.get("ports") or []:
            assert str(port).startswith("127.0.0.1:"), f"{name} publishes {port} on every interface"


def test_pipelines_file_and_demo_data_are_mounted(services: dict[str, Any]) -> None:
    from migration_manager.pipelines import load_pipelines

    pipelines = _env(services["airflow-scheduler"])["MIGRATION_PIPELINES"]
    path = _container_to_host(services, "airflow-scheduler", pipelines)
    assert path.is_file() and load_pipelines(path)
    for db in ("staging-db", "prod-db"):
        inits = [t for s, t in _bind_mounts(services[db]) if "docker-entrypoint-initdb.d" in t]
        assert len(inits) == 2, db  # the demo data of make demo, loaded on first start


def test_image_has_the_team_scale_packages() -> None:
    text = (REPO / "Dockerfile").read_text(encoding="utf-8")
    for package in ("apache-airflow-providers-celery", "apache-airflow-providers-amazon", "s3fs"):
        assert f'"{package}==' in text, package


_ENSURE = re.compile(r"python -m (migration_manager\.airflow\.signing) ensure --signer (\S+)")


def test_init_sets_up_the_signing_key_pair(services: dict[str, Any]) -> None:
    """Compose runs sign their files and trust them: airflow-init generates the key pair (first
    start) with the project's own code; no key is written into the compose file."""
    import importlib

    command = "\n".join(map(str, services["airflow-init"]["command"]))
    found = _ENSURE.search(command)
    assert found, "airflow-init does not set up the signing key pair"
    assert command.index("airflow version") < found.start()  # after the metadata DB migration
    assert _default(found.group(2).strip('"')) == "compose"
    module = importlib.import_module(found.group(1))
    assert callable(module.ensure_key_pair) and callable(module.main)
    # the module comes from the mounted include/ folder on the containers' PYTHONPATH
    env = _env(services["airflow-init"])
    assert "/opt/airflow/include" in env["PYTHONPATH"].split(":")
    path = _container_to_host(
        services, "airflow-init", "/opt/airflow/include/migration_manager/airflow/signing.py"
    )
    assert path == Path(module.__file__).resolve()
    for name, svc in services.items():  # no private key or trusted key baked into the file
        assert "AIRFLOW_CONN_MIGRATION_SIGNING" not in _env(svc), name
        assert "AIRFLOW_VAR_MIGRATION_TRUSTED_KEYS" not in _env(svc), name
    assert "PRIVATE KEY" not in COMPOSE.read_text(encoding="utf-8")


@pytest.mark.airflow
def test_ensure_key_pair_creates_once_and_keeps_trusted_keys(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """What airflow-init runs, against a real (the test session's) metadata database."""
    import json
    import uuid

    from airflow.models.connection import Connection
    from airflow.models.variable import Variable
    from airflow.utils.session import create_session

    from migration_manager.airflow.signing import ensure_key_pair, main
    from migration_manager.signing import SigningKey, check, generate, sign, trusted_keys
    from tests.airflowtools import metadata_db

    metadata_db()
    conn_id, variable = f"mm_sign_{uuid.uuid4().hex[:8]}", f"mm_trust_{uuid.uuid4().hex[:8]}"
    monkeypatch.setenv("MM_SIGNING_CONN_ID", conn_id)
    monkeypatch.setenv("MM_TRUSTED_KEYS_VARIABLE", variable)
    earlier = generate()  # a key trusted before, under the name the new key will want
    Variable.set(variable, json.dumps({"compose": earlier.public_pem()}))
    try:
        done = ensure_key_pair("compose")
        assert len(done) == 2 and done[0].startswith(f"created connection '{conn_id}'")
        conn = Connection.get_connection_from_secrets(conn_id)
        key = SigningKey.from_pem(conn.password or "", conn.login or "")
        assert key.signer == "compose"
        trusted = json.loads(Variable.get(variable))
        assert trusted["compose"] == earlier.public_pem()  # kept
        assert trusted[f"compose-{key.key_id}"] == key.public_pem()
        assert "PRIVATE KEY" not in json.dumps(trusted) and "PRIVATE KEY" not in " ".join(done)
        body = b'{"id": "mig-x"}'
        verified = check(body, sign(body, key), trusted_keys(trusted))
        assert (verified.status, verified.signer) == ("verified", f"compose-{key.key_id}")

        assert ensure_key_pair("compose") == []  # second start: nothing changes
        assert Connection.get_connection_from_secrets(conn_id).password == conn.password
        assert json.loads(Variable.get(variable)) == trusted
        assert main(["ensure", "--signer", "other"]) == 0  # the CLI airflow-init calls
        assert Connection.get_connection_from_secrets(conn_id).login == "compose"
    finally:
        with create_session() as session:
            session.query(Connection).filter(Connection.conn_id == conn_id).delete()
        Variable.delete(variable)


@pytest.mark.airflow
def test_ensure_key_pair_on_a_fresh_installation(monkeypatch: pytest.MonkeyPatch) -> None:
    import json
    import uuid

    from airflow.models.connection import Connection
    from airflow.models.variable import Variable
    from airflow.utils.session import create_session

    from migration_manager.airflow.signing import ensure_key_pair
    from migration_manager.signing import SigningKey
    from tests.airflowtools import metadata_db

    metadata_db()
    conn_id, variable = f"mm_sign_{uuid.uuid4().hex[:8]}", f"mm_trust_{uuid.uuid4().hex[:8]}"
    monkeypatch.setenv("MM_SIGNING_CONN_ID", conn_id)
    monkeypatch.setenv("MM_TRUSTED_KEYS_VARIABLE", variable)
    try:
        assert len(ensure_key_pair("compose")) == 2
        conn = Connection.get_connection_from_secrets(conn_id)
        key = SigningKey.from_pem(conn.password or "", conn.login or "")
        assert json.loads(Variable.get(variable)) == {"compose": key.public_pem()}
    finally:
        with create_session() as session:
            session.query(Connection).filter(Connection.conn_id == conn_id).delete()
        Variable.delete(variable)


def test_the_airflow_services_read_the_projects_airflow_settings(services: dict[str, Any]) -> None:
    """airflow.env is the one place of the project's Airflow settings: every Airflow service
    of compose reads it, and none sets one of its keys to another value."""
    shared = airflow_env()
    assert shared["AIRFLOW__CORE__MAX_MAP_LENGTH"] == "16384"
    airflow_services = [
        n for n, s in services.items() if s.get("image", "").startswith("migration")
    ]
    assert len(airflow_services) >= 5
    for name in airflow_services:
        env_file = services[name].get("env_file")
        assert env_file in (["airflow.env"], "airflow.env"), name
        overridden = {k: v for k, v in _env(services[name]).items() if k in shared}
        assert overridden == {}, name


def test_bin_airflow_and_the_tests_read_the_same_settings() -> None:
    """bin/airflow exports airflow.env's settings (each unless set); so does tests/conftest.py."""
    import os
    import subprocess

    shared = airflow_env()
    env = {k: v for k, v in os.environ.items() if k not in shared}
    out = subprocess.run(
        ["bash", "-c", f'source <(sed -n "/^while IFS/,/^done/p" {REPO}/bin/airflow); env'],
        env={**env, "REPO": str(REPO)},
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    exported = dict(line.split("=", 1) for line in out.splitlines() if "=" in line)
    assert {k: exported.get(k) for k in shared} == shared
    assert {k: os.environ.get(k) for k in shared} == shared  # tests/conftest.py
