"""Handing over from the old tools: stop what runs them, take over snapper's snapshots. Pure.

Rules:
- btrbk's systemd timers are disabled and its cron lines commented out (a run-parts
  script loses its execute bit); a timer that is not enabled is only reported.
- snapper's timeline and cleanup are switched off per config (SNAPPER_OFF); its
  snapshots stay where they are, with their numbers.
- snapper's timeline and number snapshots are marked subvault's (take-over), so
  subvault's policy prunes them from then on. They are local history: never sent (they
  were never on a target). Snapshots without a cleanup algorithm stay snapper's and are
  never deleted; snapshots whose info.xml cannot be read are left alone and reported.
"""

from __future__ import annotations

from collections import Counter

from subvault.adopt.found import FoundSnapper, Inputs
from subvault.adopt.planned import SNAPPER_OFF, Action, AdoptPlan

_KINDS = {"timeline": "timeline", "number": "prechange"}  # snapper cleanup algorithm -> subvault kind


def take_over_snapper(plan: AdoptPlan, inp: Inputs, fs: FoundSnapper, name: str) -> None:
    """Plan the take-over of snapper config fs (subvolume `name`) and the stop of its timeline and cleanup."""
    conf = fs.conf
    kinds: Counter[str] = Counter()
    for s in fs.snapshots:
        if s.owned:
            continue
        kind = _KINDS.get(s.cleanup)
        kinds[kind or "none"] += 1
        if kind:
            plan.actions.append(Action("take-over", name, f"#{s.number} ({s.cleanup}) → subvault {kind}",
                                       data={"path": str(s.path.parent), "kind": kind, "number": s.number}))
    if fs.unreadable:
        shown = ", ".join(fs.unreadable[:5]) + (f" and {len(fs.unreadable) - 5} more" if len(fs.unreadable) > 5 else "")
        plan.manual.append(f"{name}: {len(fs.unreadable)} snapper snapshots with a missing or unreadable info.xml ({shown}) "
                           "stay as they are: neither tool lists or prunes them; repair the info.xml or delete them by hand")
    if kinds["none"]:
        plan.manual.append(f"{name}: {kinds['none']} snapper snapshots without a cleanup algorithm stay snapper's (never deleted by either tool)")
    root = "" if inp.snapper_root in ("", "/") else f" --no-dbus --root {inp.snapper_root}"
    plan.actions.append(Action(
        "snapper-config", conf.name, f"stop snapper's timeline and cleanup for {conf.name} (its snapshots stay)",
        f"snapper{root} -c {conf.name} set-config {' '.join(SNAPPER_OFF)}",
        data={"config": conf.name},
    ))


def stop_schedulers(plan: AdoptPlan, inp: Inputs) -> None:
    """Plan disabling each btrbk timer and cron entry discovery found."""
    for s in inp.schedulers:
        if s.kind == "systemd":
            plan.found.append(f"btrbk timer {s.unit} ({s.path}){'' if s.enabled else ', not enabled'}")
            if s.enabled:
                plan.actions.append(Action("disable-timer", s.unit, f"disable {s.unit}", f"systemctl disable --now {s.unit}",
                                           data={"unit": s.unit}))
        else:
            plan.found.append(f"btrbk cron entry {s.path}" + (f" lines {', '.join(map(str, s.lines))}" if s.lines else ""))
            cmd = (f"sed -i '{';'.join(f'{n}s/^/# disabled by subvault adopt: /' for n in s.lines)}' {s.path}"
                   if s.lines else f"chmod -x {s.path}")
            plan.actions.append(Action("disable-cron", s.path, f"disable btrbk in {s.path}", cmd,
                                       data={"path": s.path, "lines": list(s.lines)}))


def install_timers(plan: AdoptPlan, inp: Inputs) -> None:
    """Plan installing and starting subvault's run and check timers."""
    plan.actions.append(Action(
        "install-timers", "systemd", "install subvault-run.timer (hourly) and subvault-check.timer (daily)",
        f"SUBVAULT_CONFIG={inp.config_path} subvault install-systemd && systemctl daemon-reload && "
        "systemctl enable --now subvault-run.timer subvault-check.timer",
    ))
