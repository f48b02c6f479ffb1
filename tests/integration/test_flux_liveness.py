"""The pre-change liveness lock, held by a real process and released by SIGKILL."""

from __future__ import annotations

import os
import subprocess
import sys

from subvault.run.flux_leftovers import Owner, holding, owner_of

HOLDER = "import sys\nfrom pathlib import Path\nfrom subvault.run.flux_leftovers import holding\nwith holding(Path(sys.argv[1]), 'pre-change-r1'):\n    print('held', flush=True)\n    sys.stdin.read()\n"


def test_liveness_lock_alive_while_held_dead_after_sigkill(tmp_path) -> None:
    assert owner_of(tmp_path, "pre-change-r1") == Owner.UNKNOWN
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(tmp_path)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    try:
        assert proc.stdout.readline().strip() == "held"
        assert owner_of(tmp_path, "pre-change-r1") == Owner.ALIVE
        proc.kill()
        proc.wait()
    finally:
        if proc.poll() is None:
            proc.kill()
    assert owner_of(tmp_path, "pre-change-r1") == Owner.DEAD
    with holding(tmp_path, "pre-change-r2"):
        pass
    assert owner_of(tmp_path, "pre-change-r2") == Owner.UNKNOWN, "a clean exit leaves no lock file"
