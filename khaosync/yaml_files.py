"""Reading the YAML files operators write (config, mappings, reconcile rules).

A bad file must fail with the file, the key path and the reason, never a traceback; the
three kinds of file share this so they say it the same way.
"""

from __future__ import annotations

import yaml
from pydantic import ValidationError

from khaosync.errors import ConfigError


def read_yaml(text: str, source: str) -> dict:
    """A YAML document that must be a mapping at the top level (an empty file is ``{}``)."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(f"{source}: not valid YAML{where}: {problem}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: expected a mapping of sections at the top level, got {type(data).__name__}")
    return data


def _reason(error: dict, keys_doc: str) -> str:
    kind, msg = error["type"], error["msg"].removeprefix("Value error, ")
    if kind == "extra_forbidden":
        return f"unknown key ({keys_doc} lists the keys this file takes)"
    if kind == "literal_error":
        return f"expected {msg.removeprefix('Input should be ')}, got {error.get('input')!r}"
    if kind == "missing":
        return "required"
    return msg


def describe(err: ValidationError, source: str, what: str, keys_doc: str) -> str:
    """``source: invalid <what>`` then one ``key.path: reason`` line per error."""
    lines = [f"{source}: invalid {what}"]
    for e in err.errors():
        path = ".".join(str(p) for p in e["loc"]) or "(top level)"
        lines.append(f"  {path}: {_reason(e, keys_doc)}")
    return "\n".join(lines)
