"""Layer 6 commands: `dr capture`, `dr restore`, `drill`. Parse, call one executor, render."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from subvault.cli.common import Env, changing_command, handle_errors, json_option, pass_env
from subvault.cli.render import emit_json, emit_outcome
from subvault.dr.capture import capture
from subvault.dr.captureopts import CaptureSpec
from subvault.dr.drill import DrillRequest, check_boot_options, drill
from subvault.dr.report import render_report
from subvault.dr.restore import RestoreRequest, restore_disks
from subvault.dr.settings import DrSettings
from subvault.errors import EXIT_FAILED, NotFound, SubvaultError
from subvault.results import Outcome
from subvault.secrets import redact


@click.group("dr")
def dr_group() -> None:
    """Disaster recovery: capture the machine's layout, restore it onto a blank disk."""


@dr_group.command("capture")
@click.option("--dest", metavar="DIR", help="Capture dir (default: [dr] capture_dir, /var/lib/subvault/dr).")
@click.option("--disk", "disks", multiple=True, metavar="DEV", help="Disk to capture (repeatable; default: those under the subvolumes).")
@click.option("--fstab", metavar="PATH", help="fstab to record (default /etc/fstab).")
@click.option("--boot-dir", "boot_dirs", multiple=True, metavar="PATH[=WHERE]", help="Boot dir to archive (default /boot, /boot/efi); WHERE is a directory, or an unmounted vfat device (read with mtools).")
@click.option("--firmware", type=click.Choice(["uefi", "bios"]), help="Override firmware detection.")
@click.option("--if-changed", is_flag=True, help="Only when the layout changed since the last capture.")
@changing_command
def dr_capture(env: Env, dest: str | None, disks: tuple[str, ...], fstab: str | None, boot_dirs: tuple[str, ...],
               firmware: str | None, if_changed: bool, dry_run: bool, as_json: bool) -> int:
    """Record partition tables, filesystem UUIDs, fstab, mounts, subvolumes and boot files."""
    spec = CaptureSpec.from_settings(DrSettings.from_config(env.config))
    if dest:
        spec.dest = Path(dest)
    if disks:
        spec.disks = list(disks)
    if fstab:
        spec.fstab = fstab
    if boot_dirs:
        spec.boot_dirs = {}
        for b in boot_dirs:
            logical, _, where = b.partition("=")
            spec.boot_dirs[logical] = where or logical
    spec.firmware = firmware
    return env.locked(capture, spec, force=not if_changed, dry_run=dry_run, as_json=as_json)


@dr_group.command("restore")
@click.option("--from", "source", required=True, metavar="TARGET", help="The btrfs target to restore from.")
@click.option("--at", default="latest", show_default=True, help="ISO time, 'latest' or an age like 2d.")
@click.option("--disk", "disks", required=True, multiple=True, metavar="DEV", help="Blank disk (one per captured disk, in order).")
@click.option("--capture", metavar="DIR", help="Capture to use (default: the one inside the target's replica).")
@click.option("--host", metavar="NAME", help="The machine's name on the target (default: this host's).")
@click.option("--yes", is_flag=True, help="Do not ask; needed when not on a terminal.")
@changing_command
def dr_restore(env: Env, source: str, at: str, disks: tuple[str, ...], capture: str | None, host: str | None,
               yes: bool, dry_run: bool, as_json: bool) -> int:
    """Partition, mkfs with the original UUIDs, receive every subvolume, restore boot files.

    Prints the plan first; nothing is written before it is confirmed. Every step is
    skipped when already done, so after an interruption the same command resumes.
    """
    def confirm(lines: list[str], ask: bool) -> bool:
        for line in lines:
            click.echo(line, err=True)
        return not ask or click.confirm("Overwrite these disks?", default=False, err=True)

    req = RestoreRequest(source, at, list(disks), capture, host, yes, interactive=sys.stdin.isatty())
    ctx = env.context(dry_run=dry_run, quiet=as_json)
    if yes and not as_json and not dry_run:
        ctx.say = lambda line: click.echo(line, err=True)
    try:
        outcome = restore_disks(ctx, req, confirm)
    except SubvaultError as exc:
        if not as_json:
            raise
        refused = Outcome("dr restore", dry_run=dry_run)  # --json answers in JSON, refusals too
        refused.fail("restore", exc)
        emit_outcome(refused, True)
        click.echo(f"error: {redact(str(exc))}", err=True)
        return exc.exit_code
    code = emit_outcome(outcome, as_json)
    return EXIT_FAILED if outcome.errors else code  # a restore stopped half-way failed: never "partial"


@click.command("drill")
@click.option("--from", "source", metavar="TARGET", help="Target to restore from (default: the first btrfs target).")
@click.option("--at", default="latest", show_default=True, help="ISO time, 'latest' or an age like 2d.")
@click.option("--capture", metavar="DIR", help="Capture to use (default: the one inside the target's replica).")
@click.option("--host", metavar="NAME", help="The machine's name on the target (default: this host's).")
@click.option("--workdir", metavar="DIR", help="Where the sparse images go (default: [dr] drill_dir).")
@click.option("--keep", is_flag=True, help="Keep the images afterwards.")
@click.option("--boot/--no-boot", default=None, help="Also boot the restored machine in QEMU (default: [dr] boot).")
@click.option("--boot-timeout", type=click.IntRange(min=1), metavar="SECONDS", help="Time to reach the milestone (default: [dr] boot_timeout).")
@click.option("--boot-port", "boot_ports", type=click.IntRange(1, 65535), multiple=True, metavar="PORT", help="A TCP port that must answer after the boot (repeatable).")
@click.option("--boot-command", metavar="CMD", help="A command run over the serial console after the boot (default: [dr] boot_command).")
@click.option("--boot-expect", metavar="REGEX", help="What --boot-command's output must match (default: [dr] boot_expect).")
@json_option
@pass_env
@handle_errors
def drill_cmd(env: Env, source: str | None, at: str, capture: str | None, host: str | None, workdir: str | None, keep: bool,
              boot: bool | None, boot_timeout: int | None, boot_ports: tuple[int, ...], boot_command: str | None, boot_expect: str | None,
              as_json: bool) -> int:
    """Restore everything into a scratch disk image, verify it, report RTO and RPO."""
    btrfs = [t.name for t in env.config.target if t.type == "btrfs"]
    req = DrillRequest(source or (btrfs[0] if btrfs else ""), at, capture, host, workdir, keep, boot, boot_timeout, boot_ports,
                       boot_command=boot_command, boot_expect=boot_expect)
    # The options first (a usage error, before the lock and before any target is looked for).
    check_boot_options(req, DrSettings.from_config(env.config).boot)
    if not req.source:
        raise NotFound("no btrfs target configured to drill from; name one with --from")
    with env.lock():
        report = drill(env.context(quiet=as_json), req)
    code = 0 if report.ok else 1
    if as_json:
        return emit_json("drill", report.to_json(), code)
    for line in render_report(report):
        click.echo(line)
    return code
