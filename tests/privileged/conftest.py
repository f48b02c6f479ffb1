"""Fixtures for real btrfs filesystems on loop devices.

Every filesystem is unmounted and its loop device detached when the test ends, pass or
fail (LoopFs.close never raises).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from subvault.demo.testbed import LoopFs, build_homelab, exclude_foreign, homelab_config

REPO = Path(__file__).resolve().parents[2]


def _can_loop() -> str | None:
    if os.geteuid() != 0:
        return "needs root"
    if not Path("/dev/loop-control").exists():
        return "needs /dev/loop-control"
    return None


@pytest.fixture(autouse=True)
def _require_root():
    reason = _can_loop()
    if reason:
        if os.environ.get("SUBVAULT_REQUIRE_PRIVILEGED") == "1":
            pytest.fail(f"privileged test cannot run: {reason}")
        pytest.skip(reason)


@pytest.fixture
def make_fs(tmp_path):
    """Factory: make_fs(name, size="1G") -> LoopFs, mounted at tmp_path/name."""
    made: list[LoopFs] = []

    def factory(name: str = "fs", size: str = "1G", **kw) -> LoopFs:
        fs = LoopFs(image=tmp_path / f"{name}.img", mountpoint=tmp_path / name, size=size, **kw)
        made.append(fs)
        return fs.create()

    yield factory
    for fs in reversed(made):
        fs.close()


@pytest.fixture
def fs(make_fs) -> LoopFs:
    return make_fs("src")


@pytest.fixture(autouse=True)
def runtime_dir(tmp_path, monkeypatch):
    """Each test's own place for compiled configs (config/compiled.py), so none sees another's."""
    monkeypatch.setenv("SUBVAULT_RUNTIME_DIR", str(tmp_path / "run"))
    return tmp_path / "run"


@pytest.fixture
def homelab(fs, tmp_path):
    """The homelab layout on one loop filesystem, with a config file for it."""
    paths = build_homelab(fs.mountpoint)
    state = tmp_path / "state"
    cfg = tmp_path / "subvault.toml"
    cfg.write_text(homelab_config(paths, state_dir=state, extra="\n" + exclude_foreign(tmp_path)))
    return Homelab(fs=fs, paths=paths, config=cfg, state=state)


class Homelab:
    def __init__(self, fs, paths, config, state):
        self.fs = fs
        self.paths = paths
        self.config = config
        self.state = state

    def cli(self, *args: str, check: bool = True, env: dict | None = None, input: str | None = None):
        """Run the real `subvault` CLI against this layout; return the CompletedProcess."""
        return run_cli("--config", str(self.config), *args, check=check, env=env, input=input)


def run_cli(*args: str, check: bool = True, env: dict | None = None, input: str | None = None):
    full_env = {**os.environ, **(env or {})}
    proc = subprocess.run(
        [sys.executable, "-m", "subvault", *args],  # the program users install (cli/entry.py)
        capture_output=True, text=True, env=full_env, input=input, cwd=REPO,
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"subvault {' '.join(args)} exited {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}")
    return proc
