"""Pre-flight checks before a migration writes anything: app settings, env variables, plugins.

Each check compares what the migration file recorded about the source with the target and
returns plain data; the Airflow tasks decide what to do with it (stop, prompt, warn).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from migration_manager import pg
from migration_manager.check_outcomes import VersionCheck, VersionDifference
from migration_manager.db_identity import DatabaseIdentity
from migration_manager.errors import ApplyError, ConfigError, EnvironmentMismatchError
from migration_manager.manifest import Manifest, Plugin, Variable
from migration_manager.profiles import Profile, get_profile

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SettingDifference:
    name: str
    source: str
    target: str


def refuse_own_source(
    manifest: Manifest, target: DatabaseIdentity, *, file: str, target_name: str
) -> None:
    """Refuse to run a migration file on the very database it was created from.

    Compares the source identity the manifest records (server ``system_identifier``, database
    OID and name) with the target's, as the servers report them: no host names are compared,
    so two spellings of one server (a service name, an address, a socket) cannot hide it. A
    file made before the identity was recorded is not checked (a warning says so).
    """
    recorded = manifest.source.identity
    if recorded is None:
        log.warning(
            "Migration file %s records no source database identity (made by an older version): "
            "it is not checked against %s being its own source",
            file,
            target_name,
        )
        return
    source = recorded
    same = source.same_as(target)
    if same is None:
        log.warning(
            "Cannot tell whether %s (%s) is the source database of %s (%s): the server does not "
            "let this role read its system identifier (pg_control_system()); check it by hand",
            target_name,
            target.shown,
            file,
            source.shown,
        )
        return
    if same:
        raise ConfigError(
            f"Migration file {file} was created from {source.shown}, and the target "
            f"{target_name} leads to that same database: executing it would write the database "
            "onto itself. Nothing was written; choose the target the file is meant for (another "
            "target_conn_id), or create the file from the other environment."
        )


def profile_of(manifest: Manifest) -> Profile:
    return get_profile(manifest.profile)


def setting_differences(
    manifest: Manifest, target_env: Mapping[str, str]
) -> list[SettingDifference]:
    """The checked settings whose effective values differ (unset equals the app's default)."""
    profile = profile_of(manifest)
    source = manifest.source.app_settings
    target = profile.settings(target_env)
    return [
        SettingDifference(name, str(source.get(name, "")), str(target[name]))
        for name in target
        if str(source.get(name, "")) != str(target[name])
    ]


def check_settings(manifest: Manifest, target_env: Mapping[str, str]) -> None:
    differences = setting_differences(manifest, target_env)
    if differences:
        lines = "\n".join(
            f"  - {d.name}: source {d.source!r}, target {d.target!r}" for d in differences
        )
        raise EnvironmentMismatchError(
            f"The source and target applications are configured differently ({len(differences)} setting(s)); "
            f"the migration cannot continue:\n{lines}\n"
            "Make the target's .env match the source's (or fix the connection's app_env), then run it again."
        )


def missing_variables(
    manifest: Manifest, target_dsn: str, target_env: Mapping[str, str]
) -> list[Variable]:
    """Source variables (names and types from the file) that the target application lacks."""
    recorded = manifest.environment.variables
    if not recorded:
        return []
    profile = profile_of(manifest)
    scope = profile.scope(target_env)
    with pg.sa_connection(target_dsn) as conn:
        present = {name for name, _type in profile.environment_variables(conn, scope)}
        conn.rollback()
    return [v for v in recorded if v.name not in present]


def missing_plugins(
    manifest: Manifest, target_dsn: str, target_env: Mapping[str, str]
) -> list[Plugin]:
    """Plugins enabled in the source that are not enabled in the target."""
    recorded = manifest.plugins
    if not recorded:
        return []
    profile = profile_of(manifest)
    scope = profile.scope(target_env)
    with pg.sa_connection(target_dsn) as conn:
        enabled = {p["name"] for p in profile.enabled_plugins(conn, scope)}
        conn.rollback()
    return [p for p in recorded if p.name not in enabled]


@dataclass(frozen=True)
class ValueRef:
    """A value given by reference in ``env_values``: ``{"variable": KEY}`` (an Airflow Variable,
    through the secrets backends) or ``{"connection": CONN_ID}`` (that connection's password).
    Resolved only by the task that encrypts the value; the run's conf holds the reference."""

    kind: str  # "variable" or "connection"
    key: str

    def __str__(self) -> str:
        return f"{self.kind} {self.key!r}"


REF_KINDS = ("variable", "connection")


def parse_supplied(supplied: Mapping[str, Any]) -> dict[str, str | ValueRef]:
    """``env_values`` as literals and references; ConfigError naming the variable for a bad entry."""
    out: dict[str, str | ValueRef] = {}
    for name, value in supplied.items():
        if isinstance(value, Mapping):
            keys = sorted(value)
            if (
                len(keys) != 1
                or keys[0] not in REF_KINDS
                or not isinstance(value[keys[0]], str)
                or not value[keys[0]].strip()
            ):
                raise ConfigError(
                    f"env_values[{name!r}]: a reference is an object with one key, "
                    '"variable" (an Airflow Variable) or "connection" (a connection\'s password), '
                    f'naming it, e.g. {{"variable": "crm_api_token"}}; got keys {keys}'
                )
            out[str(name)] = ValueRef(keys[0], value[keys[0]].strip())
        elif value is None or isinstance(value, (str, int, float, bool)):
            if value is not None and str(value) != "":
                out[str(name)] = str(value)
        else:
            raise ConfigError(
                f"env_values[{name!r}]: give a value (text) or a reference such as "
                f'{{"variable": "..."}}, not {type(value).__name__}'
            )
    return out


def literal_secrets(missing: list[Variable], supplied: Mapping[str, str | ValueRef]) -> list[str]:
    """Secret-type variables whose value was given literally (it stays in the run's conf)."""
    return [v.name for v in missing if v.secret and isinstance(supplied.get(v.name), str)]


def version_differences(
    manifest: Manifest, target_dsn: str, target_env: Mapping[str, str]
) -> tuple[str | None, str | None, list[VersionDifference]]:
    """The application version and the versions of plugins enabled in both, where they differ.

    NocoBase's rule is to migrate between identical versions: a newer target may have migrated
    its tables' shape or meaning, an older one may not know the source's configuration.
    """
    profile = profile_of(manifest)
    scope = profile.scope(target_env)
    source_version = manifest.source.app_version
    with pg.sa_connection(target_dsn) as conn:
        profile.require_app(conn, scope, "target")
        target_version = profile.app_version(conn, scope)
        target_plugins = {p["name"]: p for p in profile.enabled_plugins(conn, scope)}
        conn.rollback()
    if profile.versioned and not source_version and not target_version:
        raise ConfigError(
            f"Neither the source nor the target has a readable {profile.name} application version "
            f"(table {scope.physical('applicationVersion')!r} in schema {scope.schema!r}): the "
            "connections' app_env (DB_SCHEMA, DB_TABLE_PREFIX, DB_UNDERSCORED) may not select the "
            "application's tables. Fix them and create the migration file again. Nothing was written."
        )
    out: list[VersionDifference] = []
    if (source_version or None) != (target_version or None):
        out.append(
            VersionDifference(
                name="application", source=source_version or "", target=target_version or ""
            )
        )
    for p in manifest.plugins:
        other = target_plugins.get(p.name)
        if other is not None and p.version != str(other.get("version") or ""):
            out.append(
                VersionDifference(name=p.name, source=p.version, target=str(other["version"]))
            )
    return source_version, target_version, out


def check_versions(
    manifest: Manifest,
    target_dsn: str,
    target_env: Mapping[str, str],
    *,
    allow_mismatch: bool = False,
) -> VersionCheck:
    """Stop (EnvironmentMismatchError) when versions differ, unless ``allow_mismatch``."""
    source_version, target_version, differences = version_differences(
        manifest, target_dsn, target_env
    )
    result = VersionCheck(
        source_version=source_version,
        target_version=target_version,
        differences=differences,
        allowed=allow_mismatch,
    )
    if differences and not allow_mismatch:
        lines = "\n".join(
            f"  - {d.name}: source {d.source or '(none)'}, target {d.target or '(none)'}"
            for d in differences
        )
        raise EnvironmentMismatchError(
            f"The source and target run different versions ({len(differences)} difference(s)); "
            f"migrate between identical versions:\n{lines}\n"
            "Upgrade the older side (app and plugins) and run again, or set the param "
            "allow_version_mismatch to true to migrate anyway. Nothing was written."
        )
    return result


def resolve_values(
    missing: list[Variable],
    supplied: Mapping[str, Any],
    lookup: Callable[[ValueRef], str | None] | None = None,
) -> tuple[dict[str, str], list[Variable]]:
    """Split the missing variables into those ``supplied`` answers (non-empty) and those still missing.

    References are resolved with ``lookup`` (the Airflow adapter's); a reference that resolves
    to nothing is a ConfigError naming the variable and the reference.
    """
    parsed = parse_supplied(supplied)
    values: dict[str, str] = {}
    still: list[Variable] = []
    for var in missing:
        value = parsed.get(var.name)
        if isinstance(value, ValueRef):
            if lookup is None:
                raise ConfigError(
                    f"env_values[{var.name!r}]: references ({value}) cannot be resolved here"
                )
            resolved = lookup(value)
            if resolved is None or resolved == "":
                raise ConfigError(
                    f"env_values[{var.name!r}]: the {value} does not exist or is empty; create it "
                    "(Admin > Variables / Connections, or the secrets backend) and run again"
                )
            values[var.name] = resolved
        elif value is None or value == "":
            still.append(var)
        else:
            values[var.name] = value
    return values, still


def stored_values(
    manifest: Manifest,
    missing: list[Variable],
    values: Mapping[str, str],
    target_env: Mapping[str, str],
) -> list[tuple[str, str, str]]:
    """(name, type, value as the application stores it): secrets encrypted with the target app's key."""
    profile = profile_of(manifest)
    out = []
    for var in missing:
        if var.name not in values:
            continue
        try:
            stored = (
                profile.stored_secret(values[var.name], target_env)
                if var.secret
                else values[var.name]
            )
        except ConfigError as exc:
            raise ConfigError(f"{var.name}: {exc}") from exc
        out.append((var.name, var.type, stored))
    return out


def write_values(
    profile_name: str,
    target_dsn: str,
    target_env: Mapping[str, str],
    rows: list[tuple[str, str, str]],
) -> None:
    """Store the supplied variables in the target (``profile_name``'s app), in one transaction."""
    profile = get_profile(profile_name)
    scope = profile.scope(target_env)
    try:
        with pg.sa_connection(target_dsn) as conn:
            profile.store_environment_values(conn, scope, rows)
            conn.commit()
    except sa.exc.ProgrammingError as exc:  # the target's table is not shaped as the app's
        orig = getattr(exc, "orig", None) or exc
        first = str(orig).strip().splitlines()[0]
        raise ApplyError(
            f"Writing the environment variables {', '.join(r[0] for r in rows)} into the target "
            f"failed ({first}); nothing was written. The target's table is not shaped as the "
            f"{profile.name} profile expects: check that the target is a {profile.name} "
            "application, or add the variables in the app by hand and run again",
            terminal=True,
        ) from exc
