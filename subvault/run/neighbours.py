"""Neighbours on the same host that can delete subvault's snapshots: snapper's own cleanup.

A snapper config whose SUBVOLUME is a subvolume subvault protects, with any cleanup
algorithm on (TIMELINE_CLEANUP, NUMBER_CLEANUP, EMPTY_PRE_POST_CLEANUP = "yes"), deletes
snapshots in that `.snapshots` by snapper's own limits, blind to subvault's holds (the
incremental base of a target among them). `check` reports each such config as a
problem; `init` says how to hand over. A key snapper leaves out is read as "no".
"""

from __future__ import annotations

import os
import shlex
from pathlib import Path

from subvault.plan.coverage import Problem, ProblemKind

SNAPPER_CONFIGS = Path("/etc/snapper/configs")
CLEANUP_KEYS = ("TIMELINE_CLEANUP", "NUMBER_CLEANUP", "EMPTY_PRE_POST_CLEANUP")
HAND_OVER = " ".join(f'{k}="no"' for k in CLEANUP_KEYS)


def parse_snapper_config(text: str) -> dict[str, str]:
    """Given a snapper config file (shell-style KEY="value" lines), return its keys."""
    out = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, _, value = line.partition("=")
        try:
            words = shlex.split(value)
        except ValueError:
            continue
        out[key.strip()] = words[0] if words else ""
    return out


def cleaning_configs(paths: list[str], configs_dir: Path = SNAPPER_CONFIGS) -> list[tuple[str, str, list[str]]]:
    """Return (config name, subvolume path, cleanup keys on) of each snapper config cleaning one of paths."""
    wanted = {os.path.realpath(p): p for p in paths}
    root = os.environ.get("SUBVAULT_SYSROOT") or "/"  # as `subvault adopt --root` (tests, chroots)
    if root != "/" and configs_dir == SNAPPER_CONFIGS:
        configs_dir = Path(root) / "etc/snapper/configs"
    try:
        names = sorted(os.listdir(configs_dir))
    except OSError:
        return []
    found = []
    for name in names:
        try:
            conf = parse_snapper_config((configs_dir / name).read_text())
        except (OSError, UnicodeDecodeError):
            continue
        sub = os.path.realpath(os.path.join(root, conf["SUBVOLUME"].lstrip("/"))) if conf.get("SUBVOLUME") else None
        on = [k for k in CLEANUP_KEYS if conf.get(k, "no").lower() == "yes"]
        if sub in wanted and on:
            found.append((name, wanted[sub], on))
    return found


def snapper_cleanup_problems(paths: list[str], configs_dir: Path = SNAPPER_CONFIGS) -> list[Problem]:
    return [
        Problem(
            ProblemKind.NEIGHBOUR,
            path,
            f"snapper config {name} ({configs_dir / name}) cleans up {path} by its own limits ({', '.join(f'{k}=yes' for k in on)}) "
            f"and can delete subvault's snapshots, the incremental base among them; hand over: set {HAND_OVER} there "
            "(subvault prunes by its timeline), or stop protecting the subvolume with subvault",
        )
        for name, path, on in cleaning_configs(paths, configs_dir)
    ]


def hand_over_notes(paths: list[str], configs_dir: Path = SNAPPER_CONFIGS) -> list[str]:
    """Comment lines for `init`: each snapper config that would fight subvault over a subvolume, and what to set."""
    return [
        f"# snapper config {name} cleans up {path} ({', '.join(on)}): before the first `subvault run`, "
        f"set {HAND_OVER} in {configs_dir / name} (snapper keeps listing; subvault prunes)"
        for name, path, on in cleaning_configs(paths, configs_dir)
    ]
