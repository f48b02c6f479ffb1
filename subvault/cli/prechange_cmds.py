"""CLI command of layer 2 around GitOps changes: `pre-change`.

Imported at the bottom of subvault.cli.main so that it joins the `cli` group.
"""

from __future__ import annotations

import os
import shutil
import socket
import sys

import click

from subvault.cli.main import Env, _handle_errors, cli, json_option, pass_env


@cli.command("pre-change")
@click.option("--desc", "description", metavar="D", help="Snapshot description (default pre-change-YYYYMMDD-HHMMSS).")
@click.option("--flux", "flux_mode", type=click.Choice(["auto", "required", "off"]), default="auto", show_default=True,
              help="auto: suspend Flux if reachable, else warn and snapshot anyway; required: abort if not.")
@click.option("--resume", is_flag=True, help="Resume what an interrupted pre-change suspended, then exit.")
@click.option("--run-id", metavar="ID", help="With --resume: only this run's objects.")
@click.option("--dry-run", is_flag=True, help="Show each step it would take (Flux is only read); change nothing, run nothing.")
@json_option
@click.argument("command", nargs=-1, type=click.UNPROCESSED)
@pass_env
@_handle_errors
def pre_change(
    env: Env, description: str | None, flux_mode: str, resume: bool, run_id: str | None, dry_run: bool, as_json: bool, command: tuple[str, ...]
) -> int:
    """Suspend Flux, run quiesce hooks, snapshot everything, run post hooks, run COMMAND, resume Flux.

    Flux is resumed on every path out: success, error, SIGTERM, SIGINT, SIGHUP, and by a
    systemd timer if this process dies. Give COMMAND after `--`.
    """
    from datetime import datetime

    from subvault.cli.render import emit_json
    from subvault.errors import ConfigError, UsageError
    from subvault.run.prechange import PrechangeFailed, resume_recorded, run_prechange

    cfg = env.config
    log = (lambda m: click.echo(m, err=True)) if not as_json else (lambda m: None)
    kube = _kube(cfg) if cfg.flux and flux_mode != "off" else None
    if resume and dry_run:
        raise UsageError("--dry-run with --resume: `subvault check` lists what is left suspended, without changing it")
    if resume:
        if cfg.flux is None:
            raise ConfigError("pre-change --resume needs a [flux] section with kubeconfig")
        resumed = resume_recorded(_kube(cfg), log, run_id)
        if as_json:
            emit_json("pre-change", {"resumed": resumed})
        else:
            click.echo(f"resumed {len(resumed)} objects" + "".join(f"\n  {r}" for r in resumed))
        return 0
    if flux_mode == "required" and cfg.flux is None:
        raise ConfigError("--flux required needs a [flux] section with kubeconfig")
    from contextlib import ExitStack, nullcontext
    from pathlib import Path

    from subvault.lock import exclusive
    from subvault.run.flux_leftovers import Owner, holding, owner_of
    from subvault.run.prechange import new_run_id

    now = datetime.now()
    run_id = new_run_id(now)
    state = Path(cfg.defaults.state_dir)
    # The lock first, before anything is suspended or quiesced: a timer `run` in the middle
    # of a send is waited for (up to prechange_lock_wait), and if it does not finish in
    # time nothing has been paused. Inside it, the liveness lock: while it is held, `run`
    # never resumes this run's objects. A dry run changes nothing and takes neither.
    # The lock is released before COMMAND (run_prechange calls release_lock): a timer
    # `run` during a long change goes on; the liveness lock stays until Flux is resumed.
    lock = ExitStack()
    if not dry_run:
        lock.enter_context(exclusive(state, wait=max(env.wait, cfg.defaults.prechange_lock_wait)))
    alive = nullcontext() if dry_run else holding(state, run_id)
    with lock, alive:
        try:
            result = run_prechange(
                flux=kube,
                flux_mode=flux_mode,  # type: ignore[arg-type]  # click.Choice lets only the FluxMode values through
                hooks=_hooks(cfg),
                snap_all=lambda d: _snap_all(env, d),
                description=description,
                command=list(command) or None,
                now=now,
                run_id=run_id,
                wait_timeout=cfg.flux.wait_seconds if cfg.flux else 0,
                log=log,
                selection=_selection(cfg),
                node=(cfg.flux.node if cfg.flux and cfg.flux.node else socket.gethostname()),
                pod_hooks=bool(cfg.flux and cfg.flux.pod_hooks),
                arm_timer=_arm_timer(env, cfg, log) if kube is not None and not dry_run else None,
                dry_run=dry_run,
                live_run=lambda other: owner_of(state, other) == Owner.ALIVE,
                release_lock=lock.close,
            )
        except PrechangeFailed as exc:
            if as_json:
                emit_json("pre-change", exc.result.to_dict(), exc.exit_code)
            raise
    if as_json:
        emit_json("pre-change", result.to_dict())
    elif dry_run:
        click.echo("\n".join(result.planned))
        for w in result.warnings:
            click.echo(f"warning: {w}", err=True)
    else:
        click.echo(f"ok: {result.description}; flux {result.flux}; {len(result.suspended)} suspended, {len(result.resumed)} resumed")
        for w in result.warnings:
            click.echo(f"warning: {w}", err=True)
    return 0


def _snap_all(env: Env, description: str):
    """Snapshot every subvolume (pre-change already holds the lock); any failed subvolume fails the pre-change."""
    from subvault.errors import SubvaultError
    from subvault.run.local import snap_all

    outcome = snap_all(env.context(quiet=True), description)
    if outcome.errors:
        raise SubvaultError("snap-all incomplete: " + "; ".join(outcome.errors))
    return {"created": [i.detail for i in outcome.items if i.action == "created"]}


def _kube(cfg):
    from pathlib import Path

    from subvault.k8s.lightkube_client import LightkubeClient

    return LightkubeClient(Path(cfg.flux.kubeconfig))


def _hooks(cfg):
    return list(cfg.hook)


def _selection(cfg):
    from subvault.k8s.flux import FluxSelection

    if cfg.flux is None:
        return FluxSelection()
    return FluxSelection(kinds=tuple(cfg.flux.kinds), namespaces=tuple(cfg.flux.namespaces or ()), labels=dict(cfg.flux.labels))


def _arm_timer(env: Env, cfg, log):
    from subvault.config.load import config_path
    from subvault.k8s import autoresume

    exe = os.path.abspath(shutil.which("subvault") or sys.argv[0])

    def arm(run_id: str):
        argv = [exe, "--config", str(config_path(env.config_path).resolve()), "pre-change", "--resume", "--run-id", run_id]
        return autoresume.arm(run_id, argv, log, delay=cfg.flux.auto_resume_seconds)

    return arm
