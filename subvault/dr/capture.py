"""`dr capture`: record what a bare-metal restore needs, into a directory that gets replicated.

Gathering (gather.py: commands, no writes) is separate from storing (capturestore.py),
so that `capture_if_changed` can compare the layout's fingerprint with the stored
capture and write only on change.

Rules:
- What a capture covers and leaves out is layout.py's: a btrfs on several devices is left
  out with one line saying what to do. When nothing is left, the capture is refused
  (UnsupportedLayout), which `run` reports as a warning, not a failure, so that it does
  not end partial on every run.
- A capture dir in no configured subvolume is captured with a warning: it travels to no target.
"""

from __future__ import annotations

import dataclasses

from subvault.context import Context
from subvault.dr.captureopts import OPTIONS_FILE, CaptureSpec, options_file, spec_for_run, usable_boot_dirs
from subvault.dr.capturestore import store, stored_fingerprint
from subvault.dr.gather import gather
from subvault.dr.layout import UnsupportedLayout
from subvault.dr.settings import DrSettings
from subvault.errors import SubvaultError
from subvault.results import Item, Outcome


def capture(ctx: Context, spec: CaptureSpec | None = None, *, force: bool = True) -> Outcome:
    """Capture the machine into spec.dest (default: the [dr] settings); with force false, only on change."""
    out = Outcome("dr capture", dry_run=ctx.dry_run)
    config_spec = CaptureSpec.from_settings(DrSettings.from_config(ctx.config))
    note = None
    if spec is None:
        spec, note = spec_for_run(config_spec)
    boot, warnings = usable_boot_dirs(spec.boot_dirs, spec.fstab)
    out.warnings += warnings
    try:
        gathered = gather(ctx.config, dataclasses.replace(spec, boot_dirs=boot), ctx.now)
    except UnsupportedLayout as exc:
        if force:
            out.fail("dr", exc)
        else:  # `run`: a layout the capture cannot record is said every time, but is no failure of the run
            out.warnings.append(f"dr: {exc}")
        return out
    except SubvaultError as exc:
        out.fail("dr", exc)
        return out
    out.warnings += [f"dr: {line}" for line in gathered.left_out]
    gathered.files[OPTIONS_FILE] = options_file(spec, config_spec)
    m = gathered.manifest
    if m.dr_subvolume is None:
        out.warnings.append(f"{spec.dest} is in no configured subvolume, so the capture does not travel to any target")
    summary = f"{len(m.disks)} disk(s), {len(m.filesystems)} filesystem(s), {len(m.boot_dirs)} boot dir(s), {m.firmware}"
    if note:
        summary += f"; {note}"
    if not force and stored_fingerprint(spec.dest) == m.fingerprint:
        out.items.append(Item("dr", "unchanged", f"layout as captured ({summary})", {"fingerprint": m.fingerprint}))
        return out
    if ctx.dry_run:
        out.items.append(Item("dr", "would-capture", f"{spec.dest} ({summary})", {"fingerprint": m.fingerprint}))
        return out
    try:
        here = store(gathered, spec.dest)
    except (SubvaultError, OSError) as exc:
        out.fail("dr", exc if isinstance(exc, SubvaultError) else SubvaultError(f"storing the capture: {exc}"))
        return out
    out.items.append(Item("dr", "captured", f"{here} ({summary})", {"path": str(here), "fingerprint": m.fingerprint}))
    return out


def capture_if_changed(ctx: Context, spec: CaptureSpec | None = None) -> Outcome:
    """For `run`: capture only when the layout's fingerprint differs from the stored capture's."""
    return capture(ctx, spec, force=False)
