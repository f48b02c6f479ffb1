"""The schema is the one source of every key and default: the docs and the sample agree with it.

The docs name keys as "`[table] key`, default V", "`key`, default V", "`[table] key` (V)"
and in toml examples as "key = V  # … (default V)". Every key named that way must exist
in the schema, and every default stated must be the schema's.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import msgspec
import pytest

from subvault.config import schema
from subvault.config.sample import render_sample

ROOT = Path(__file__).resolve().parents[2]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]

TABLES: dict[str, type[msgspec.Struct]] = {
    f.name: f.type for f in msgspec.structs.fields(schema.Config) if isinstance(f.type, type)
} | {"flux": schema.FluxConf, "dr": schema.DrConf, "subvolume": schema.SubvolumeConf, "target": schema.TargetConf,
     "exclude": schema.ExcludeConf, "hook": schema.HookConf, "source": schema.SourceConf}

_UNITS = {"s": 1, "sec": 1, "seconds": 1, "min": 60, "minutes": 60, "h": 3600, "hour": 3600, "hours": 3600}


def _defaults(table: type[msgspec.Struct]) -> dict[str, object]:
    out: dict[str, object] = {}
    for f in msgspec.structs.fields(table):
        if f.default is not msgspec.NODEFAULT:
            out[f.name] = f.default
        elif f.default_factory is not msgspec.NODEFAULT:
            out[f.name] = f.default_factory()
        else:
            out[f.name] = msgspec.NODEFAULT
    return out


def _tables_with(key: str) -> list[str]:
    return [name for name, table in TABLES.items() if key in _defaults(table)]


def _same(stated: str, default: object) -> bool:
    stated = stated.strip().strip("`\"'")
    if isinstance(default, bool):
        return stated.lower() == str(default).lower()
    if isinstance(default, int | float):
        m = re.fullmatch(r"([0-9.]+)\s*([a-z]*)", stated)
        if not m:
            return False
        number = float(m.group(1)) * _UNITS.get(m.group(2), 1 if not m.group(2) else float("nan"))
        return number == float(default)
    return stated == str(default)


_NAMED = [
    # `[table] key`, default V   |   `[table] key` (V)
    re.compile(r"`\[(?P<table>\w+)\] (?P<key>\w+)`(?:,? default (?P<v1>`[^`]+`|[\w./]+(?: (?:min|h|s|d)\b)?)| \((?P<v2>[\w.]+)\))?"),
    # (`key`, default V)
    re.compile(r"`(?P<key>[a-z_]+)`,? default (?P<v1>`[^`]+`|[0-9][\w.]*(?: (?:min|h|s)\b)?)"),
    # toml example: key = V  # … (default V)
    re.compile(r"^(?P<key>[a-z_]+) = \S.*#.*\(default (?P<v1>[^)]+)\)", re.M),
]


def _claims():
    for doc in DOCS:
        text = doc.read_text()
        for pattern in _NAMED:
            for m in pattern.finditer(text):
                groups = m.groupdict()
                stated = groups.get("v1") or groups.get("v2")
                if not groups.get("table") and not _tables_with(m.group("key")):
                    continue  # a CLI option or a field in backticks, not a config key
                yield doc.name, groups.get("table"), m.group("key"), stated


CLAIMS = sorted(set(_claims()), key=str)


@pytest.mark.parametrize(("doc", "table", "key", "stated"), CLAIMS, ids=[f"{c[0]}:{c[1] or ''}.{c[2]}" for c in CLAIMS])
def test_every_key_the_docs_name_exists_and_its_stated_default_is_the_schemas(doc, table, key, stated):
    tables = [table] if table else _tables_with(key)
    assert table is None or table in TABLES, f"{doc}: [{table}] is not a config table"
    defaults = _defaults(TABLES[tables[0]])
    assert key in defaults, f"{doc}: [{tables[0]}] has no key {key!r} (keys: {', '.join(defaults)})"
    if stated is not None and defaults[key] is not msgspec.NODEFAULT:
        assert _same(stated, defaults[key]), f"{doc}: [{tables[0]}] {key}: docs say {stated!r}, the schema's default is {defaults[key]!r}"


def test_the_docs_name_some_keys_at_all():
    assert len(CLAIMS) >= 8, CLAIMS


def test_the_sample_shows_every_schema_default():
    sample = render_sample()
    for name, table in TABLES.items():
        for key, default in _defaults(table).items():
            if default is msgspec.NODEFAULT or default is None or default == [] or default == {}:
                continue
            shown = json.dumps(default) if not isinstance(default, float) else repr(default)
            assert re.search(rf"^#? ?{key} = {re.escape(shown)}", sample, re.M), f"[{name}] {key}: the sample does not show {shown}"
