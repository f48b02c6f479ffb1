"""What `pre-change` is built from, made from the config: the Kubernetes client, the hooks,
the Flux selection, the auto-resume timer and the snapshot step."""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from subvault.config.schema import Config
from subvault.context import Context
from subvault.errors import SubvaultError
from subvault.hooks import Hook
from subvault.k8s import autoresume
from subvault.k8s.flux import FluxSelection
from subvault.k8s.lightkube_client import LightkubeClient
from subvault.run.local import snap_all


def kube_client(cfg: Config) -> LightkubeClient:
    assert cfg.flux is not None, "callers check for a [flux] section"
    return LightkubeClient(Path(cfg.flux.kubeconfig))


def hooks_of(cfg: Config) -> list[Hook]:
    return list(cfg.hook)


def selection_of(cfg: Config) -> FluxSelection:
    if cfg.flux is None:
        return FluxSelection()
    return FluxSelection(kinds=tuple(cfg.flux.kinds), namespaces=tuple(cfg.flux.namespaces or ()), labels=dict(cfg.flux.labels))


def auto_resume_timer(cfg: Config, config_file: Path, log: Callable[[str], None]) -> Callable[[str], Any]:
    """Given the config, return arm(run_id): a systemd timer that runs `subvault pre-change --resume` for that run."""
    assert cfg.flux is not None, "callers check for a [flux] section"
    delay = cfg.flux.auto_resume_seconds
    exe = os.path.abspath(shutil.which("subvault") or sys.argv[0])

    def arm(run_id: str) -> Any:
        argv = [exe, "--config", str(config_file), "pre-change", "--resume", "--run-id", run_id]
        return autoresume.arm(run_id, argv, log, delay=delay)

    return arm


def snap_all_step(ctx: Context, description: str) -> dict[str, list[str]]:
    """Snapshot every subvolume (pre-change already holds the lock); any failed subvolume fails the pre-change."""
    outcome = snap_all(ctx, description)
    if outcome.errors:
        raise SubvaultError("snap-all incomplete: " + "; ".join(outcome.errors))
    return {"created": [i.detail for i in outcome.items if i.action == "created"]}
