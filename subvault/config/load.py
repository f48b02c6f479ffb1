"""Find, parse and validate the config file.

Errors name the file, the key and what was expected, one line per problem, e.g.
`subvault.toml: target "pi": keep: "24x" is not a retention (expected e.g. "24h 8d 5w")`.
"""

from __future__ import annotations

import os
import re
import tomllib
from pathlib import Path
from typing import Any

from subvault.errors import ConfigError

DEFAULT_PATH = "/etc/subvault/subvault.toml"


def config_path(explicit: str | None = None) -> Path:
    """Return the config path: --config, then $SUBVAULT_CONFIG, then the default."""
    return Path(explicit or os.environ.get("SUBVAULT_CONFIG") or DEFAULT_PATH)


def load_config(path: str | Path):
    """Given a path, return the validated Config. Raise ConfigError naming every problem."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such config file; write one with `subvault init` or pass --config") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}") from None
    return parse_config(raw.decode("utf-8", errors="replace"), name=path.name)


def parse_config(text: str, *, name: str = "subvault.toml"):
    """Given TOML text, return the validated Config. Raise ConfigError."""
    import msgspec

    from subvault.config.schema import Config

    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{name}: not valid TOML: {exc}") from None
    try:
        return msgspec.convert(data, Config, strict=True)
    except msgspec.ValidationError as exc:
        raise ConfigError(f"{name}: {_format(str(exc), data)}") from None


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
            if key in ("subvolume", "target", "exclude", "hook"):
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


def _format(text: str, data: dict[str, Any]) -> str:
    """Render a msgspec error ("msg - at `$.target[0].keep`") as "target "pi": keep: msg"."""
    m = _AT.match(text)
    msg, raw_loc = (m.group("msg"), m.group("loc") or "") if m else (text, "")
    loc = tuple(name if name else int(idx) for name, idx in _LOC.findall(raw_loc))
    unknown = re.match(r"Object contains unknown field `(.+)`$", msg)
    missing = re.match(r"Object missing required field `(.+)`$", msg)
    if unknown:
        msg = f'unknown key "{unknown.group(1)}" (check the spelling; see `subvault config sample`)'
    elif missing:
        msg = f'missing required key "{missing.group(1)}"'
    elif msg.startswith("Invalid enum value "):
        msg = f"{msg[len('Invalid enum value '):]} is not an allowed value (see `subvault config sample`)"
    elif loc and isinstance(loc[-1], str) and msg.startswith("Expected"):
        msg = f"{msg[0].lower()}{msg[1:]}"
    where = _label(loc, data)
    return (": ".join(where) + ": " if where else "") + msg
