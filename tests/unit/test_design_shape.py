"""docs/design.md's Shape section names every package and module of subvault/, and nothing else.

The section is a tree: an entry starts at two spaces (`  name/` or `  name.py`), its
description runs until the next entry, and a package's description names each of its
modules as a word. A module added, moved or removed without the tree changing fails here.
"""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "subvault"


def shape_entries() -> dict[str, str]:
    """Entry name (`plan/`, `model.py`) -> its description, from the Shape section's code block."""
    text = (ROOT / "docs" / "design.md").read_text()
    section = text.split("## Shape", 1)[1]
    block = section.split("```", 2)[1]
    entries: dict[str, str] = {}
    current = None
    for line in block.splitlines()[1:]:
        m = re.match(r"^  (\S+?(?:/|\.py))\s*(.*)$", line)
        if m:
            current = m[1]
            entries[current] = m[2]
        elif current is not None:
            entries[current] += " " + line.strip()
    return entries


def modules_of(folder: Path) -> set[str]:
    return {p.stem for p in folder.glob("*.py") if p.stem != "__init__"}


def test_every_package_and_top_level_module_has_an_entry_and_every_entry_exists() -> None:
    entries = shape_entries()
    packages = {p.name + "/" for p in PACKAGE.iterdir() if (p / "__init__.py").exists()}
    top = {p.name for p in PACKAGE.glob("*.py") if p.name not in ("__init__.py", "__main__.py")}
    named_files = set(re.findall(r"\b([a-z_]+\.py)\b", " ".join(entries.values()))) | {e for e in entries if e.endswith(".py")}
    assert packages <= set(entries), f"packages missing from the Shape section: {sorted(packages - set(entries))}"
    assert top <= named_files, f"top-level modules missing from the Shape section: {sorted(top - named_files)}"
    stale = {e for e in entries if e not in packages and e not in top}
    assert not stale, f"the Shape section names what is not there: {sorted(stale)}"


def test_every_package_entry_names_each_of_its_modules() -> None:
    entries = shape_entries()
    missing = {}
    for entry, description in entries.items():
        if not entry.endswith("/"):
            continue
        words = set(re.findall(r"[a-z_0-9]+", description))
        lost = modules_of(PACKAGE / entry.rstrip("/")) - words
        if lost:
            missing[entry] = sorted(lost)
    assert not missing, f"modules the Shape section does not name: {missing}"


def test_every_module_a_package_entry_names_as_a_file_exists() -> None:
    entries = shape_entries()
    stale = {}
    for entry, description in entries.items():
        if entry.endswith("/"):
            gone = {f for f in re.findall(r"\b([a-z_0-9]+)\.py\b", description)} - modules_of(PACKAGE / entry.rstrip("/"))
            if gone:
                stale[entry] = sorted(gone)
    assert not stale, f"the Shape section names modules that are not there: {stale}"
