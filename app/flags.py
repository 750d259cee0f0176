"""The service's command-line flags, generated from :class:`app.settings.Settings`.

One flag per setting (``data_dir`` → ``--data-dir``), with the setting's description, its
environment variable and its default as help, so a setting added to ``Settings`` is a flag at
once and flags and environment cannot drift. Secrets (``SecretStr`` fields: tokens, keys) get
no flag: a command line shows in ``ps`` and in shell history; they come from the environment,
the env file or the secrets directory. Flag values are passed to ``Settings`` as given and
validated there, exactly as the same text in the environment would be.
"""

from __future__ import annotations

import argparse
import types
import typing
from pathlib import Path
from typing import Any, Literal, get_args, get_origin

from pydantic import AliasChoices, SecretStr
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from app.settings import ENV_FILE_VAR, SECRETS_DIR_VAR, Settings

SOURCES = ("env_file", "secrets_dir")
"""Flags that pick where settings are read, not settings themselves."""


def is_secret(field: FieldInfo) -> bool:
    """A ``SecretStr`` setting (possibly optional): never a flag, never logged."""
    return SecretStr in _members(field.annotation)


def secret_names() -> list[str]:
    return [name for name, field in Settings.model_fields.items() if is_secret(field)]


def flag_names() -> dict[str, str]:
    """``{setting: --flag}`` for every setting that has a flag (all but the secrets)."""
    return {name: "--" + name.replace("_", "-") for name, field in Settings.model_fields.items()
            if not is_secret(field)}


def env_names(name: str) -> list[str]:
    """The environment variables (and env-file keys) that set ``name``."""
    alias = Settings.model_fields[name].validation_alias
    if isinstance(alias, AliasChoices):
        return [choice for choice in alias.choices if isinstance(choice, str)]
    return [f"MODELEDIT_{name.upper()}"]


def add_settings_flags(parser: argparse.ArgumentParser) -> None:
    """Add every setting's flag (and the two source flags) to ``parser``; absent flags leave
    no attribute, so the environment's value stands."""
    group = parser.add_argument_group(
        "settings", "each flag overrides its environment variable, which overrides the env "
        "file, which overrides the secrets directory; tokens are no flags: set "
        f"{', '.join(env_names(n)[0] for n in secret_names())} there")
    group.add_argument("--env-file", dest="env_file", default=argparse.SUPPRESS, metavar="FILE",
                       help=f"env file to read ({ENV_FILE_VAR}; default .env when present; "
                       "'' for none)")
    group.add_argument("--secrets-dir", dest="secrets_dir", default=argparse.SUPPRESS,
                       metavar="DIR", help=f"one file per setting ({SECRETS_DIR_VAR}; default "
                       "/run/secrets when present; '' for none)")
    for name, flag in flag_names().items():
        field = Settings.model_fields[name]
        kwargs: dict[str, Any] = {"dest": name, "default": argparse.SUPPRESS,
                                  "help": _help(name, field)}
        kind = _value_type(field.annotation)
        if kind is bool:
            kwargs["action"] = argparse.BooleanOptionalAction
        elif get_origin(kind) is Literal:
            kwargs["choices"] = [str(choice) for choice in get_args(kind)]
        else:
            kwargs["metavar"] = _metavar(kind)
        group.add_argument(flag, **kwargs)


def settings_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    """The ``Settings(...)`` arguments the parsed flags give (sources as ``_env_file`` etc.)."""
    given = vars(args)
    kwargs: dict[str, Any] = {name: given[name] for name in flag_names() if name in given}
    for source in SOURCES:
        if source in given:
            kwargs[f"_{source}"] = given[source]
    return kwargs


def describe(name: str) -> str:
    """``port (--port, MODELEDIT_PORT)``: how an error names a setting."""
    where = [flag_names()[name]] if name in flag_names() else []
    return f"{name} ({', '.join([*where, *env_names(name)])})"


# -- help text ----------------------------------------------------------------------------------
def _help(name: str, field: FieldInfo) -> str:
    text = (field.description or "").rstrip(".")
    default = _default(field)
    parts = [text] if text else []
    parts.append(" / ".join(env_names(name)) + (f", default {default}" if default else ""))
    return "; ".join(parts).replace("%", "%%")  # argparse formats help with %


def _default(field: FieldInfo) -> str:
    if field.default_factory is not None:
        value = field.default_factory()  # type: ignore[call-arg]
    elif field.default is PydanticUndefined:
        return ""
    else:
        value = field.default
    if value is None or value == {} or isinstance(value, bool):
        return "" if not isinstance(value, bool) else ("on" if value else "off")
    return str(value)


def _members(annotation: Any) -> set[Any]:
    """The types an annotation allows (the members of a union, itself otherwise)."""
    if get_origin(annotation) in (typing.Union, types.UnionType):
        return {member for arg in get_args(annotation) for member in _members(arg)}
    return {annotation}


def _value_type(annotation: Any) -> Any:
    """The annotation without ``| None``."""
    members = [m for m in _members(annotation) if m is not type(None)]
    return members[0] if len(members) == 1 else annotation


def _metavar(kind: Any) -> str:
    if kind is Path:
        return "PATH"
    if kind in (int, float):
        return "N"
    if get_origin(kind) is dict:
        return "JSON"
    return "TEXT"
