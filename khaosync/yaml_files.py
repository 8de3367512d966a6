"""Reading the YAML files operators write (config, mappings, reconcile rules).

A bad file must fail with the file, the key path and the reason, never a traceback; the
three kinds of file share this so they say it the same way.
"""

from __future__ import annotations

from pathlib import Path

import yaml
from pydantic import ValidationError

from khaosync.errors import ConfigError

RENDERED_INPUT = 80  # characters of a bad value an error message quotes, at most


class _NoAliasLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` refusing aliases (``*name``, also ``<<: *name``).

    Nothing in khaosync's files needs them, and an alias bomb (a few lines that expand to
    billions of nodes) would hang whatever touched the expanded value (issue 11.8).
    """

    def compose_node(self, parent, index):  # type: ignore[no-untyped-def]
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            raise yaml.composer.ComposerError(None, None, f"aliases (*{event.anchor}) are not allowed in khaosync files; "
                                              "write the value out", event.start_mark)
        return super().compose_node(parent, index)


def read_text_file(path: str | Path, what: str = "file") -> str:
    """An operator's file as text: UTF-8 (a BOM is allowed), else one line naming the byte."""
    p = Path(path)
    try:
        data = p.read_bytes()
    except OSError as exc:
        raise ConfigError(f"{what} {p}: cannot read it ({exc.strerror or exc})") from None
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[:exc.start].count(b"\n") + 1
        raise ConfigError(f"{p}: not valid UTF-8 (byte 0x{data[exc.start]:02x} at offset {exc.start}, line {line}); "
                          "save the file as UTF-8") from None


def read_yaml(text: str, source: str) -> dict:
    """A YAML document that must be a mapping at the top level (an empty file is ``{}``)."""
    try:
        data = yaml.load(text, Loader=_NoAliasLoader)  # noqa: S506 - a SafeLoader subclass
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
        return f"expected {msg.removeprefix('Input should be ')}, got {_bounded(error.get('input'))}"
    if kind == "missing":
        return "required"
    return _bounded_text(msg)


def _bounded(value: object) -> str:
    """A value as an error quotes it, never longer than ``RENDERED_INPUT`` characters."""
    if isinstance(value, (dict, list, tuple)) and len(value) > 8:
        return f"a {type(value).__name__} of {len(value)} items"
    return _bounded_text(repr(value))


def _bounded_text(text: str) -> str:
    return text if len(text) <= RENDERED_INPUT * 2 else text[:RENDERED_INPUT * 2] + "..."


def describe(err: ValidationError, source: str, what: str, keys_doc: str) -> str:
    """``source: invalid <what>`` then one ``key.path: reason`` line per error."""
    lines = [f"{source}: invalid {what}"]
    for e in err.errors():
        path = ".".join(str(p) for p in e["loc"]) or "(top level)"
        lines.append(f"  {path}: {_reason(e, keys_doc)}")
    return "\n".join(lines)
