"""Issue 14's size rules, held: no module of subvault/ over 400 lines, no function over 60."""

from __future__ import annotations

import ast
from pathlib import Path

import subvault

PACKAGE = Path(subvault.__file__).parent
MODULES = sorted(PACKAGE.rglob("*.py"))


def test_no_module_is_over_400_lines():
    long = {str(p.relative_to(PACKAGE)): n for p in MODULES if (n := len(p.read_text().splitlines())) > 400}
    assert long == {}


def test_no_function_is_over_60_lines():
    long = {}
    for path in MODULES:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.end_lineno is not None:
                if (n := node.end_lineno - node.lineno + 1) > 60:
                    long[f"{path.relative_to(PACKAGE)}:{node.name}"] = n
    assert long == {}
