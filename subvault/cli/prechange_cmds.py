"""CLI command of layer 2 around GitOps changes: `pre-change`."""

from __future__ import annotations

import socket
from collections.abc import Callable
from contextlib import ExitStack, nullcontext
from datetime import datetime
from pathlib import Path

import click

from subvault.cli.common import Env, handle_errors, json_option, pass_env
from subvault.cli.render import emit_json
from subvault.config.location import config_path
from subvault.config.schema import Config
from subvault.errors import ConfigError, UsageError
from subvault.lock import exclusive
from subvault.run.flux_leftovers import Owner, holding, owner_of
from subvault.run.prechange import PrechangeFailed, new_run_id, resume_recorded, run_prechange
from subvault.run.prechange_result import PrechangeResult
from subvault.run.prechange_setup import auto_resume_timer, hooks_of, kube_client, selection_of, snap_all_step


@click.command("pre-change")
@click.option("--desc", "description", metavar="D", help="Snapshot description (default pre-change-YYYYMMDD-HHMMSS).")
@click.option("--flux", "flux_mode", type=click.Choice(["auto", "required", "off"]), default="auto", show_default=True,
              help="auto: suspend Flux if reachable, else warn and snapshot anyway; required: abort if not.")
@click.option("--resume", is_flag=True, help="Resume what an interrupted pre-change suspended, then exit.")
@click.option("--run-id", metavar="ID", help="With --resume: only this run's objects.")
@click.option("--dry-run", is_flag=True, help="Show each step it would take (Flux is only read); change nothing, run nothing.")
@json_option
@click.argument("command", nargs=-1, type=click.UNPROCESSED)
@pass_env
@handle_errors
def pre_change(
    env: Env, description: str | None, flux_mode: str, resume: bool, run_id: str | None, dry_run: bool, as_json: bool, command: tuple[str, ...]
) -> int:
    """Suspend Flux, run quiesce hooks, snapshot everything, run post hooks, run COMMAND, resume Flux.

    Flux is resumed on every path out: success, error, SIGTERM, SIGINT, SIGHUP, and by a
    systemd timer if this process dies. Give COMMAND after `--`.
    """
    cfg = env.config
    log = (lambda m: click.echo(m, err=True)) if not as_json else (lambda m: None)
    kube = kube_client(cfg) if cfg.flux and flux_mode != "off" else None
    if resume and dry_run:
        raise UsageError("--dry-run with --resume: `subvault check` lists what is left suspended, without changing it")
    if resume:
        return _resume(cfg, log, run_id, as_json)
    if flux_mode == "required" and cfg.flux is None:
        raise ConfigError("--flux required needs a [flux] section with kubeconfig")
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
                hooks=hooks_of(cfg),
                snap_all=lambda d: snap_all_step(env.context(quiet=True), d),
                description=description,
                command=list(command) or None,
                now=now,
                run_id=run_id,
                wait_timeout=cfg.flux.wait_seconds if cfg.flux else 0,
                log=log,
                selection=selection_of(cfg),
                node=(cfg.flux.node if cfg.flux and cfg.flux.node else socket.gethostname()),
                pod_hooks=bool(cfg.flux and cfg.flux.pod_hooks),
                arm_timer=auto_resume_timer(cfg, Path(config_path(env.config_path)).resolve(), log) if kube is not None and not dry_run else None,
                dry_run=dry_run,
                live_run=lambda other: owner_of(state, other) == Owner.ALIVE,
                release_lock=lock.close,
            )
        except PrechangeFailed as exc:
            if as_json:
                emit_json("pre-change", exc.result.to_dict(), exc.exit_code)
            raise
    return _report(result, dry_run=dry_run, as_json=as_json)


def _report(result: PrechangeResult, *, dry_run: bool, as_json: bool) -> int:
    if as_json:
        emit_json("pre-change", result.to_dict())
        return 0
    if dry_run:
        click.echo("\n".join(result.planned))
    else:
        click.echo(f"ok: {result.description}; flux {result.flux}; {len(result.suspended)} suspended, {len(result.resumed)} resumed")
    for w in result.warnings:
        click.echo(f"warning: {w}", err=True)
    return 0


def _resume(cfg: Config, log: Callable[[str], None], run_id: str | None, as_json: bool) -> int:
    """`pre-change --resume`: resume what a dead pre-change (or one run id) left suspended."""
    if cfg.flux is None:
        raise ConfigError("pre-change --resume needs a [flux] section with kubeconfig")
    resumed = resume_recorded(kube_client(cfg), log, run_id)
    if as_json:
        emit_json("pre-change", {"resumed": resumed})
    else:
        click.echo(f"resumed {len(resumed)} objects" + "".join(f"\n  {r}" for r in resumed))
    return 0
