"""Rules documents and application settings, validated up front with errors that name the key.

The rules document is a pydantic model (:class:`MigrationRules`): the one definition of its shape,
validated here and rendered as the JSON schema of the ``rules`` param of the trigger form.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal, get_args

import yaml
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, model_validator
from pydantic_core import ErrorDetails

from migration_manager import validation
from migration_manager.errors import ConfigError

Rule = Literal["schema-only", "overwrite", "upsert", "insert-ignore", "skip"]
SystemDefault = Literal["schema-only", "overwrite", "upsert", "insert-ignore", "skip", "profile"]

SCHEMA_ONLY = "schema-only"
OVERWRITE = "overwrite"
UPSERT = "upsert"
INSERT_IGNORE = "insert-ignore"
SKIP = "skip"
RULES: tuple[str, ...] = get_args(Rule)
PROFILE_DEFAULT = "profile"
KEYED_RULES = (UPSERT, INSERT_IGNORE)
DATA_RULES = (OVERWRITE, UPSERT, INSERT_IGNORE)

ProfileName = Literal["generic", "nocobase"]  # profiles.PROFILES, by name
PROFILE_NAMES: tuple[ProfileName, ...] = get_args(ProfileName)
DEFAULT_PROFILE = "nocobase"

SYSTEM = "system"
USER = "user"
GROUPS = (SYSTEM, USER)

TableName = Annotated[str, BeforeValidator(str)]  # YAML may read a table named 1 as a number


def check_profile(name: str | None) -> ProfileName:
    """A known profile's name (None or "" is the default, nocobase); ConfigError naming the known."""
    key = (name or DEFAULT_PROFILE).strip()
    for known in PROFILE_NAMES:
        if key == known:
            return known
    raise ConfigError(f"Unknown profile {name!r}; use one of {', '.join(PROFILE_NAMES)}")


def _none_is_empty(doc: Any) -> Any:
    """``null`` (or an empty value) for an object of the document: its defaults."""
    if isinstance(doc, Mapping):
        return {k: ({} if v is None else v) for k, v in doc.items()}
    return doc


class _Document(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    shape: ClassVar[str] = "an object"  # what a value of this model looks like, for messages


class GroupRules(_Document):
    """One group's default rule and its independent rules (table name -> rule)."""

    shape: ClassVar[str] = "an object with 'default' and 'independent'"

    default: str  # each group names its rules (below)
    independent: dict[TableName, Rule] = Field(
        default_factory=dict, description="an object of table name -> rule"
    )

    _empty = model_validator(mode="before")(_none_is_empty)


class SystemRules(GroupRules):
    default: SystemDefault = "profile"


class UserRules(GroupRules):
    default: Rule = "schema-only"


class MigrationRules(_Document):
    """A default rule per group plus independent rules for chosen tables.

    Shape (JSON param or YAML file)::

        {"system": {"default": "profile", "independent": {"uiSchemas": "upsert"}},
         "user":   {"default": "schema-only", "independent": {"orders": "overwrite"}}}
    """

    shape: ClassVar[str] = "an object with keys 'system' and/or 'user'"

    system: SystemRules = SystemRules()
    user: UserRules = UserRules()

    @model_validator(mode="before")
    @classmethod
    def _decode(cls, doc: Any) -> Any:
        if doc is None or doc == "":
            return {}
        if isinstance(doc, str):
            try:
                doc = json.loads(doc)
            except json.JSONDecodeError as exc:
                raise ValueError(
                    f'not valid JSON ({exc}); give an object like {{"user": {{"default": "schema-only"}}}}'
                ) from None
        return _none_is_empty(doc)

    @classmethod
    def parse(cls, doc: Any, *, source: str = "rules") -> MigrationRules:
        """The rules of a document (an object, JSON text, None); errors name ``source`` and the key."""
        try:
            return cls.model_validate(doc)
        except ValidationError as exc:
            raise ConfigError("\n".join(rule_problems(exc.errors(), source))) from None

    @classmethod
    def load(cls, path: str | Path) -> MigrationRules:
        path = Path(path)
        try:
            doc = yaml.safe_load(path.read_text(encoding="utf-8"))
        except FileNotFoundError as exc:
            raise ConfigError(f"Rules file {path} does not exist") from exc
        except yaml.YAMLError as exc:
            raise ConfigError(f"Rules file {path} is not valid YAML: {exc}") from exc
        return cls.parse(doc, source=str(path))

    def group(self, name: str) -> GroupRules:
        return self.system if name == SYSTEM else self.user


def _rules_where(source: str, loc: validation.Loc) -> str:
    """``rules.user.default``, ``rules.system.independent['roles']``."""
    where = source
    for i, part in enumerate(loc):
        where += f"[{part!r}]" if i and loc[i - 1] == "independent" else f".{part}"
    return where


def _shape(loc: validation.Loc) -> str:
    """What the value at ``loc`` of a rules document looks like."""
    if loc and loc[-1] == "independent":
        return str(GroupRules.model_fields["independent"].description)
    model = validation.model_at(MigrationRules, loc)
    return model.shape if model is not None and issubclass(model, _Document) else "an object"


def rule_problems(
    errors: list[ErrorDetails], source: str, *, under: validation.Loc = ()
) -> list[str]:
    """A rules document's validation errors (the document at ``under``), each naming ``source``
    and the key."""
    unknown, others = validation.split(errors, under)
    problems = [
        f"{_rules_where(source, loc)}: unknown key(s) {', '.join(map(repr, sorted(keys)))}; "
        f"allowed: {', '.join(map(repr, validation.keys_of(validation.model_at(MigrationRules, loc))))}"
        for loc, keys in unknown.items()
    ]
    for err in others:
        loc = tuple(err["loc"])
        where = _rules_where(source, loc)
        if err["type"] == "literal_error":
            allowed = ", ".join(validation.literal_names(err))
            problems.append(f"{where}: unknown rule {err['input']!r}; use one of {allowed}")
        elif err["type"] in validation.TYPE_ERRORS:
            problems.append(f"{where}: expected {_shape(loc)}, got {type(err['input']).__name__}")
        else:
            problems.append(f"{where}: {validation.text(err)}")
    return problems


# --------------------------------------------------------------------------- app settings

_ENV_LINE = re.compile(r"^\s*(?:export\s+)?([A-Za-z_][A-Za-z0-9_]*)\s*=\s*(.*?)\s*$")


def parse_env_file(text: str) -> dict[str, str]:
    """The ``KEY=value`` pairs of a ``.env`` file (comments, ``export`` and quotes handled)."""
    out: dict[str, str] = {}
    for line in text.splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        m = _ENV_LINE.match(line)
        if not m:
            continue
        key, value = m.group(1), m.group(2)
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        else:
            value = re.sub(r"\s+#.*$", "", value)
        out[key] = value
    return out


def app_env_from_extra(
    extra: Mapping[str, Any] | None, *, conn_id: str = "connection"
) -> dict[str, str]:
    """An environment's app settings from its connection's extra (``app_env`` or ``app_env_file``)."""
    extra = extra or {}
    env: dict[str, str] = {}
    if extra.get("app_env_file"):
        path = Path(str(extra["app_env_file"]))
        try:
            env.update(parse_env_file(path.read_text(encoding="utf-8")))
        except OSError as exc:
            raise ConfigError(
                f"{conn_id}: app_env_file {path} cannot be read ({exc.strerror}); fix the path in the connection's extra"
            ) from exc
    raw = extra.get("app_env")
    if isinstance(raw, str):
        try:
            raw = json.loads(raw) if raw.strip() else None  # blank, like empty: no settings
        except json.JSONDecodeError as exc:
            raise ConfigError(f"{conn_id}: extra 'app_env' is not a JSON object ({exc})") from exc
    if raw:
        if not isinstance(raw, Mapping):
            raise ConfigError(f"{conn_id}: extra 'app_env' must be an object of NAME -> value")
        env.update({str(k): "" if v is None else str(v) for k, v in raw.items()})
    return env
