"""Write a L{Config} back out as TOML (what C{hubtwist check-config} prints)."""

from __future__ import annotations

import json

import attrs

from hubtwist.config.schema import Config


def toml_value(value: object) -> str:
    """One value in TOML syntax (strings, numbers, booleans, lists and inline tables)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(int(value)) if value.is_integer() else repr(value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{json.dumps(k)} = {toml_value(v)}" for k, v in value.items()) + "}"
    if callable(value):  # a Python configuration's function: shown, not reproducible
        return json.dumps(f"<function {getattr(value, '__qualname__', value)}>")
    raise TypeError(f"no TOML form for {value!r}")


def to_toml(config: Config) -> str:
    """The effective configuration, every key included, as a TOML document."""
    lines = []
    tables = []
    for field in attrs.fields(Config):
        value = getattr(config, field.name)
        if field.name == "servers":
            continue
        if attrs.has(type(value)):
            value = _table(value)
        if value is not None:
            lines.append(f"{field.name} = {toml_value(_shown(field, value))}")
    for name, server in config.servers.items():
        tables.append(f"\n[servers.{json.dumps(name) if '.' in name else name}]")
        nested = []
        for field in attrs.fields(type(server)):
            value = getattr(server, field.name)
            if attrs.has(type(value)):
                nested.append((field.name, value))
            elif value is not None:
                tables.append(f"{field.name} = {toml_value(value)}")
        for key, table in nested:
            tables.append(f"{key} = {toml_value(attrs.asdict(table))}")
    return "\n".join(lines + tables) + "\n"


def _table(value: object) -> dict:
    """A nested model as an inline table: unset keys left out, secrets hidden."""
    return {field.name: _shown(field, getattr(value, field.name))
            for field in attrs.fields(type(value)) if getattr(value, field.name) is not None}


def _shown(field: attrs.Attribute, value: object) -> object:
    # Secrets (tokens) never reach a terminal or a log through check-config.
    return "(hidden)" if field.metadata.get("secret") and isinstance(value, str) else value
