"""Find, parse and validate the config file.

Errors name the file, the key and what was expected, one line per problem, e.g.
`subvault.toml: target "pi": keep: "24x" is not a retention (expected e.g. "24h 8d 5w")`.
"""

from __future__ import annotations

import os
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from subvault.errors import ConfigError

DEFAULT_PATH = "/etc/subvault/subvault.toml"


def config_path(explicit: str | None = None) -> Path:
    """Return the config path: --config, then $SUBVAULT_CONFIG, then the default."""
    return Path(explicit or os.environ.get("SUBVAULT_CONFIG") or DEFAULT_PATH)


def load_config(path: str | Path):
    """Given a path, return the validated Config. Raise ConfigError naming every problem."""
    text, name = read_config(path)
    return parse_config(text, name=name)


def read_config(path: str | Path) -> tuple[str, str]:
    """Return the config's text and the name errors use: its real path. Raise ConfigError."""
    path = Path(path)
    name = os.path.realpath(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(f"{name}: no such config file; write one with `subvault init` or pass --config") from None
    except OSError as exc:
        raise ConfigError(f"{name}: cannot read: {exc.strerror}") from None
    return raw.decode("utf-8", errors="replace"), name


def parse_config(text: str, *, name: str = "subvault.toml"):
    """Given TOML text, return the validated Config. Raise ConfigError listing every problem, one a line."""
    checked = validate(text, name=name)
    if checked.errors:
        raise ConfigError("\n".join(checked.errors))
    return checked.config


@dataclass
class Validated:
    config: Any  # Config of every table that is valid
    errors: list[str]  # every problem, "NAME: where: what is wrong (expected …)"
    data: dict[str, Any]  # the TOML as parsed


def validate(text: str, *, name: str = "subvault.toml") -> Validated:
    """Given TOML text, return the Config of every table that is valid and every problem, one a line.

    Each table (and each item of an array of tables) is validated on its own, so one
    mistake does not hide the next; then the rules that span tables run. Each line is
    "NAME: where: what is wrong (expected …)".
    """
    from subvault.config.schema import Config

    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{name}: not valid TOML: {exc}") from None
    parts, errors = _tables(data)
    cfg = Config(**parts)
    declared = {t.get("name") for t in data.get("target", []) if isinstance(t, dict)} if isinstance(data.get("target"), list) else set()
    errors += cfg.problems({n for n in declared if isinstance(n, str)})
    return Validated(cfg, [f"{name}: {line}" for line in errors], data)


def _tables(data: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """Convert each top-level table (each item of an array on its own); return the valid ones and the problems."""
    import typing

    import msgspec

    from subvault.config.schema import Config

    fields = {f.name: f.type for f in msgspec.structs.fields(Config)}
    parts: dict[str, Any] = {}
    errors: list[str] = []
    for key in data:
        if key not in fields:
            errors.append(f'unknown key "{key}" (check the spelling; see `subvault config sample`)')
    for key, kind in fields.items():
        if key not in data:
            continue
        value = data[key]
        if typing.get_origin(kind) is list and isinstance(value, list):
            (item_kind,) = typing.get_args(kind)
            parts[key] = []
            for i, item in enumerate(value):
                try:
                    parts[key].append(msgspec.convert(item, item_kind, strict=True))
                except msgspec.ValidationError as exc:
                    errors += _format(str(exc), data, (key, i))
            continue
        try:
            parts[key] = msgspec.convert(value, kind, strict=True)
        except msgspec.ValidationError as exc:
            errors += _format(str(exc), data, (key,))
    return parts, errors


_AT = re.compile(r"^(?P<msg>.*?)(?: - at `\$(?P<loc>[^`]*)`)?$", re.S)
_LOC = re.compile(r"\.([A-Za-z_][A-Za-z0-9_-]*)|\[(\d+)\]")


def _label(loc: tuple, data: dict[str, Any]) -> list[str]:
    """Turn a location into words: ('target', 0, 'keep') -> ['target "pi"', 'keep']."""
    parts: list[str] = []
    node: Any = data
    i = 0
    while i < len(loc):
        key = loc[i]
        if isinstance(key, str) and i + 1 < len(loc) and isinstance(loc[i + 1], int):
            idx = loc[i + 1]
            items = node.get(key, []) if isinstance(node, dict) else []
            item = items[idx] if isinstance(items, list) and idx < len(items) else {}
            ident = (item.get("name") or item.get("path")) if isinstance(item, dict) else None
            if key in ("subvolume", "target", "exclude", "hook", "source"):
                parts.append(f'{key} "{ident}"' if ident else f"{key} #{idx + 1}")
            else:
                parts.append(f"{key}[{idx}]")
            node = item
            i += 2
            continue
        parts.append(str(key))
        node = node.get(key, {}) if isinstance(node, dict) else {}
        i += 1
    return parts


def _format(text: str, data: dict[str, Any], base: tuple = ()) -> list[str]:
    """Render a msgspec error ("msg - at `$.keep`", under base ("target", 0)) as lines "target "pi": keep: msg".

    A rule may report several problems at once, one a line; each becomes a line.
    """
    m = _AT.match(text)
    msg, raw_loc = (m.group("msg"), m.group("loc") or "") if m else (text, "")
    loc = base + tuple(name if name else int(idx) for name, idx in _LOC.findall(raw_loc))
    where = _label(loc, data)
    prefix = ": ".join(where) + ": " if where else ""
    return [prefix + _plain(line, loc) for line in msg.splitlines() or [msg]]


def _plain(msg: str, loc: tuple) -> str:
    unknown = re.match(r"Object contains unknown field `(.+)`$", msg)
    missing = re.match(r"Object missing required field `(.+)`$", msg)
    if unknown:
        return f'unknown key "{unknown.group(1)}" (check the spelling; see `subvault config sample`)'
    if missing:
        return f'missing required key "{missing.group(1)}"'
    if msg.startswith("Invalid enum value "):
        return f"{msg[len('Invalid enum value '):]} is not an allowed value (see `subvault config sample`)"
    if loc and isinstance(loc[-1], str) and msg.startswith("Expected"):
        return f"{msg[0].lower()}{msg[1:]}"
    return msg
