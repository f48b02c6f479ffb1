"""Find, parse and validate the config file.

Errors name the file, the key and what was expected, one line per problem, e.g.
`subvault.toml: target "pi": keep: "24x" is not a retention (expected e.g. "24h 8d 5w")`.
"""

from __future__ import annotations

import errno
import os
import stat
import tomllib
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec

from subvault.config.location import MAX_CONFIG_BYTES
from subvault.config.schema import Config
from subvault.errors import ConfigError


def load_config(path: str | Path) -> Config:
    """Given a path, return the validated Config. Raise ConfigError naming every problem."""
    text, name = read_config(path)
    return parse_config(text, name=name)


def read_config(path: str | Path) -> tuple[str, str]:
    """Return the config's text and the name errors use: its real path. Raise ConfigError.

    Only a regular file is read (a FIFO would wait forever, /dev/zero never end), only
    up to MAX_CONFIG_BYTES, and only as UTF-8.
    """
    path = Path(path)
    name = os.path.realpath(path)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        raise ConfigError(f"{name}: no such config file; write one with `subvault init` or pass --config") from None
    except OSError as exc:
        raise ConfigError(f"{name}: cannot read: {_cannot_open(exc)}") from None
    mode = os.fstat(fd).st_mode
    if not stat.S_ISREG(mode):
        os.close(fd)
        kind = "a directory" if stat.S_ISDIR(mode) else "not a regular file"
        raise ConfigError(f"{name}: is {kind} (expected the config file itself, e.g. --config /etc/subvault/subvault.toml)")
    with os.fdopen(fd, "rb") as f:
        try:
            raw = f.read(MAX_CONFIG_BYTES + 1)
        except OSError as exc:
            raise ConfigError(f"{name}: cannot read: {exc.strerror}") from None
    if len(raw) > MAX_CONFIG_BYTES:
        raise ConfigError(f"{name}: is too large for a config (more than {MAX_CONFIG_BYTES >> 20} MiB; is --config the right file?)")
    try:
        return raw.decode("utf-8").removeprefix("\ufeff"), name  # a byte-order mark, as some editors save, is no key
    except UnicodeDecodeError as exc:  # never decoded into something else: a path or a key would change
        line = raw.count(b"\n", 0, exc.start) + 1
        raise ConfigError(f"{name}: not UTF-8 text: byte {exc.start} (line {line}) is {raw[exc.start:exc.start + 1]!r} "
                          "(expected a UTF-8 file; re-save it as UTF-8)") from None


def _cannot_open(exc: OSError) -> str:
    """Why the config cannot be opened, and what to do."""
    if exc.errno in (errno.EACCES, errno.EPERM):
        return f"{exc.strerror} (subvault runs as root: run it with sudo, or give this user read access)"
    if exc.errno == errno.ELOOP:
        return f"{exc.strerror} (a symlink loop: point --config at the file itself)"
    return exc.strerror or str(exc)


def parse_config(text: str, *, name: str = "subvault.toml") -> Config:
    """Given TOML text, return the validated Config. Raise ConfigError listing every problem, one a line."""
    checked = validate(text, name=name)
    if checked.errors:
        raise ConfigError("\n".join(checked.errors))
    config: Config = checked.config
    return config


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
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{name}: not valid TOML: {exc}") from None
    except RecursionError:  # tomllib recurses once per level of [ or {
        raise ConfigError(f"{name}: not valid TOML: arrays or tables nested too deeply (expected a config, not a stress test)") from None
    parts, errors = _tables(data)
    cfg = Config(**parts)
    declared = {t.get("name") for t in data.get("target", []) if isinstance(t, dict)} if isinstance(data.get("target"), list) else set()
    errors += cfg.problems({n for n in declared if isinstance(n, str)})
    return Validated(cfg, [f"{name}: {line}" for line in errors], data)


def _tables(data: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """Check each top-level table (each item of an array on its own); return the valid ones and the problems."""
    parts: dict[str, Any] = {}
    errors: list[str] = []
    fields = {f.name: f for f in msgspec.structs.fields(Config)}
    errors += [f"{_unknown(key)}" for key in data if key not in fields]
    for key, field in fields.items():
        if key in data:
            value, problems = _check(data[key], field.type, [key])
            errors += problems
            if not problems or isinstance(value, list):
                parts[key] = value
    return parts, errors


# The walk below knows where it is, so no location is ever read back out of msgspec's
# message text: it checks the shape of a table (unknown and missing keys) and converts
# each value on its own with msgspec, then builds the table, which runs its rules.
# A table reports all of its problems; an item of an array is labelled by its name.

_ITEM_LABELS = ("subvolume", "target", "exclude", "hook", "source")


def _check(value: Any, kind: Any, where: list[str]) -> tuple[Any, list[str]]:
    """Convert value to kind; return (converted, problems), each problem "where: what"."""
    shape = _without_none(_bare(kind))
    if isinstance(shape, type) and issubclass(shape, msgspec.Struct):
        return _check_table(value, shape, where)
    if typing.get_origin(shape) is list and isinstance(value, dict) and where and where[-1] in _ITEM_LABELS:
        # `[subvolume]` where `[[subvolume]]` belongs: the one mistake TOML makes easy
        key = ".".join(w.split(" ")[0] for w in where)  # [[source.subvolume]] inside a source
        return None, [_at(where, f"expected [[{key}]] (one per item), got a single [{key}] table: write [[{key}]]")]
    if typing.get_origin(shape) is list and isinstance(value, list):
        (item,) = typing.get_args(shape)
        out, problems = [], []
        for i, one in enumerate(value):
            converted, found = _check(one, item, _item_where(where, i, one))
            if not found:  # a valid item is kept even when its neighbours are not
                out.append(converted)
            problems += found
        if problems:
            return out, problems
    if typing.get_origin(shape) is dict and isinstance(value, dict):
        _, item = typing.get_args(shape)
        problems = [p for k, one in value.items() for p in _check(one, item, [*where, f'"{k}"'])[1]]
        if problems:
            return None, problems
    try:  # the whole value: this also applies the list's own constraints (min_length)
        return msgspec.convert(value, kind, strict=True), []
    except msgspec.ValidationError as exc:
        return None, [_at(where, _expected(kind, value, str(exc)))]


def _bare(kind: Any) -> Any:
    """The type under `Annotated[...]` (its constraints are applied when the value is converted)."""
    while typing.get_origin(kind) is typing.Annotated:
        kind = typing.get_args(kind)[0]
    return kind


def _check_table(value: Any, kind: type[msgspec.Struct], where: list[str]) -> tuple[Any, list[str]]:
    if not isinstance(value, dict):
        return None, [_at(where, f"expected a table, got {_toml_type(value)}")]
    fields = {f.name: f for f in msgspec.structs.fields(kind)}
    problems = [_at(where, _unknown(key)) for key in value if key not in fields]
    problems += [_at(where, f'missing required key "{name}"') for name, f in fields.items() if f.required and name not in value]
    bad: set[str] = set()
    for name, field in fields.items():
        if name in value:
            found = _check(value[name], field.type, [*where, name])[1]
            problems += found
            bad |= {name} if found else set()
    if problems:
        # The table's own rules still run on what is well-typed, so one mistake does not
        # hide the next: the bad keys are left at their defaults (and their lines dropped).
        rest = {k: v for k, v in value.items() if k in fields and k not in bad}
        if all(k in rest for k, f in fields.items() if f.required):
            problems += [p for p in _rules(rest, kind, where)[1] if not any(p.startswith(_at(where, f"{k}:")) for k in bad)]
        return None, problems
    return _rules(value, kind, where)


def _rules(value: dict[str, Any], kind: type[msgspec.Struct], where: list[str]) -> tuple[Any, list[str]]:
    """Build the table, which runs its rules (__post_init__); return it, or its problems one a line."""
    try:
        return msgspec.convert(value, kind, strict=True), []
    except msgspec.ValidationError as exc:
        return None, [_at(where, line) for line in str(exc).splitlines()]


def _without_none(kind: Any) -> Any:
    """`X | None` is `X` here: TOML has no null, so a present key always means X."""
    args = typing.get_args(kind)
    if typing.get_origin(kind) in (typing.Union, types.UnionType) and type(None) in args:
        rest = [a for a in args if a is not type(None)]
        if len(rest) == 1:
            return rest[0]
    return kind


def _item_where(where: list[str], i: int, item: Any) -> list[str]:
    """("target", 0) with name "pi" -> 'target "pi"'; unnamed -> "target #1"."""
    *outer, key = where
    if key in _ITEM_LABELS:
        ident = (item.get("name") or item.get("path")) if isinstance(item, dict) else None
        return [*outer, f'{key} "{ident}"' if ident else f"{key} #{i + 1}"]
    return [*outer, f"{key}[{i}]"]


def _expected(kind: Any, value: Any, message: str) -> str:
    """What was wrong with one value, in the config's words."""
    allowed = _literal_values(_without_none(_bare(kind)))
    if allowed is not None:
        choices = ", ".join(f'"{a}"' for a in allowed)
        return f"{_toml_value(value)} is not an allowed value (expected one of {choices})"
    # msgspec's own text for a scalar says what it expected ("Expected `int` >= 0, got `str`")
    return message[:1].lower() + message[1:]


def _literal_values(kind: Any) -> tuple[Any, ...] | None:
    if typing.get_origin(kind) is typing.Literal:
        return typing.get_args(kind)
    return None


def _toml_value(value: Any) -> str:
    return f'"{value}"' if isinstance(value, str) else repr(value)


def _toml_type(value: Any) -> str:
    return {str: "a string", int: "a number", float: "a number", bool: "a boolean", list: "an array"}.get(type(value), type(value).__name__)


def _unknown(key: str) -> str:
    return f'unknown key "{key}" (check the spelling; see `subvault config sample`)'


def _at(where: list[str], what: str) -> str:
    return ": ".join([*where, what]) if where else what
