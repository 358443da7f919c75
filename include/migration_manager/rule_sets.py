"""Named rule sets: a saved migration configuration (profile, source, rules) as YAML.

Stored in the migration store as ``rule_sets/<name>.yaml``; DAG params and sync pipelines
accept ``rule_set: <name>`` wherever they accept ``rules``. The document is a pydantic model
(:class:`NamedRuleSet`); this module also owns reading the folder of rule sets
(:func:`list_rule_sets`, :func:`read_rule_set`), for the DAGs and the page alike.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Annotated, Any, Protocol

import yaml
from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, ValidationError

from migration_manager import validation
from migration_manager.config import MigrationRules, check_profile, rule_problems
from migration_manager.errors import ConfigError

FOLDER = "rule_sets"  # in the migration store
SUFFIX = ".yaml"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


def check_name(name: str) -> str:
    """A rule set name: letters, digits, ``_ . -``, at most 64, no path characters."""
    if not isinstance(name, str) or not _NAME.match(name) or ".." in name:
        raise ConfigError(
            f"Rule set name {name!r} is not allowed: use 1-64 letters, digits, '_', '.', '-' "
            "(no '/', '\\\\' or '..'), starting with a letter or digit"
        )
    return name


def _text(value: Any) -> str:
    return "" if value is None else str(value)


RuleSetName = Annotated[str, AfterValidator(validation.checked(check_name))]
Text = Annotated[str, BeforeValidator(_text)]  # a YAML description may read as a number
ProfileName = Annotated[str, BeforeValidator(validation.checked(check_profile))]


class NamedRuleSet(BaseModel):
    """``rule_sets/<name>.yaml``: name, description, profile, source connection and rules."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: RuleSetName
    description: Text = ""
    profile: ProfileName = "nocobase"
    source_conn_id: Annotated[str, BeforeValidator(lambda v: _text(v) or "migration_source")] = (
        "migration_source"
    )
    rules: MigrationRules = MigrationRules()

    def to_yaml(self) -> str:
        doc = {
            "name": self.name,
            "description": self.description,
            "profile": self.profile,
            "source_conn_id": self.source_conn_id,
            "rules": self.rules.model_dump(),
        }
        return yaml.safe_dump(doc, sort_keys=False, allow_unicode=True)

    @classmethod
    def parse(cls, doc: Any, *, name: str | None = None) -> NamedRuleSet:
        """A rule set document (``name``: its file's name, when the document has none)."""
        if not isinstance(doc, Mapping):
            raise ConfigError(
                f"Rule set {name or '?'}: expected a mapping with name, profile, source_conn_id, rules"
            )
        label = str(doc.get("name") or name or "")
        try:
            return cls.model_validate({**doc, "name": label})
        except ValidationError as exc:
            raise ConfigError("\n".join(_problems(exc, label))) from None

    @classmethod
    def from_yaml(cls, text: str, *, name: str | None = None) -> NamedRuleSet:
        try:
            doc = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise ConfigError(f"Rule set {name or '?'} is not valid YAML: {exc}") from exc
        return cls.parse(doc, name=name)


def _problems(exc: ValidationError, label: str) -> list[str]:
    errors = exc.errors()
    unknown, others = validation.split(errors)
    problems = [
        f"Rule set {label!r}: unknown key(s) {', '.join(sorted(keys))}"
        for loc, keys in unknown.items()
        if not loc
    ]
    problems += rule_problems(errors, f"rule set {label}.rules", under=("rules",))
    for err in others:
        key = err["loc"][:1]
        if key == ("rules",):
            continue
        if err["type"] == "value_error" and key in (("name",), ("profile",)):
            problems.append(validation.text(err))  # the check's own message names the value
        else:
            where = ".".join(map(str, err["loc"]))
            problems.append(f"Rule set {label!r}: key {where!r}: {validation.text(err)}")
    return problems


# --------------------------------------------------------------------------- the store's folder


class Entry(Protocol):
    """A file of the store (``pathlib.Path`` or Airflow's ``ObjectStoragePath``)."""

    @property
    def name(self) -> str: ...

    def read_text(self) -> str: ...


class Folder(Protocol):
    def exists(self) -> bool: ...

    def iterdir(self) -> Iterable[Any]: ...

    def __truediv__(self, other: str) -> Any: ...


def list_rule_sets(folder: Folder) -> tuple[list[NamedRuleSet], list[str]]:
    """Every readable rule set of ``folder`` by name, and a message for each unreadable file."""
    found: list[NamedRuleSet] = []
    errors: list[str] = []
    if not folder.exists():
        return found, errors
    entries: list[Entry] = sorted(folder.iterdir(), key=lambda p: p.name)
    for path in entries:
        if not path.name.endswith(SUFFIX):
            continue
        try:
            found.append(NamedRuleSet.from_yaml(path.read_text(), name=path.name[: -len(SUFFIX)]))
        except ConfigError as exc:
            errors.append(f"{path.name}: {exc}")
    return found, errors


def rule_set_file(folder: Folder, name: str) -> Any:
    """The file of rule set ``name`` in ``folder`` (the name checked: no path characters)."""
    return folder / f"{check_name(name)}{SUFFIX}"


def read_rule_set(folder: Folder, name: str) -> NamedRuleSet:
    """Rule set ``name`` of ``folder``; ConfigError naming the saved ones when it does not exist."""
    path = rule_set_file(folder, name)
    if not path.exists():
        known = ", ".join(r.name for r in list_rule_sets(folder)[0]) or "none saved yet"
        raise ConfigError(
            f"Rule set {name!r} does not exist in the migration store (known: {known})"
        )
    return NamedRuleSet.from_yaml(path.read_text(), name=name)
