"""snap-all's fast start stays lean: what it imports is checked, not only timed (bench_local times it).

Each module named here cost milliseconds of the fast start once (typing with the re and
enum it pulls in: 8 ms; ctypes.util: 40 ms); click and msgspec are the full CLI's.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
HEAVY = {"click", "msgspec", "typing", "re", "enum", "pathlib", "subprocess", "dataclasses", "inspect", "tomllib",
         "ctypes.util", "tempfile", "hashlib", "logging", "json", "concurrent.futures", "shutil"}


def test_the_fast_start_imports_nothing_heavy():
    code = f"import sys; sys.path.insert(0, {str(REPO)!r}); import subvault.cli.entry, subvault.cli.fast"
    proc = subprocess.run([sys.executable, "-S", "-X", "importtime", "-c", code], capture_output=True, text=True, check=True)
    loaded = {line.split("|")[-1].strip() for line in proc.stderr.splitlines() if line.startswith("import time:")}
    assert "subvault.cli.fast" in loaded
    assert loaded & HEAVY == set()
