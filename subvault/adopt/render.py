"""The subvault.toml an adoption plan stands for. Pure: plan in, text out.

Rules:
- What has no equivalent is a comment saying so: at the top for the whole installation,
  above a table for one subvolume or target. Each subvolume says where it came from.
- [defaults] holds the most common timeline and prechange_keep and the targets every
  subvolume sends to; a [[subvolume]] writes only what differs from them.
- A [[target]] writes only the keys it sets (compress "none" is the schema's default).
"""

from __future__ import annotations

import json
from collections import Counter

from subvault.adopt.found import Inputs
from subvault.adopt.planned import AdoptPlan, SubPlan, TargetPlan


def render_toml(plan: AdoptPlan, inp: Inputs) -> str:
    """Return the subvault.toml for the plan."""
    lines = ["# Written by `subvault adopt` from the snapper and btrbk configuration found on this host.",
             "# Review it, then `subvault config check`."]
    lines += [f"# {c}" for c in plan.comments]
    timelines = Counter(s.timeline for s in plan.subvolumes)
    keeps = Counter(s.prechange_keep for s in plan.subvolumes)
    default_timeline = timelines.most_common(1)[0][0] if timelines else "24h 7d 4w"
    default_keep = keeps.most_common(1)[0][0] if keeps else 10
    common = set(plan.subvolumes[0].targets) if plan.subvolumes else set()
    for s in plan.subvolumes[1:]:
        common &= set(s.targets)
    default_targets = [t.name for t in plan.targets if t.name in common]
    lines += ["", "[defaults]", f"timeline = {_q(default_timeline)}", f"prechange_keep = {default_keep}",
              f"targets = {_list(default_targets)}", f"state_dir = {_q(inp.state_dir)}"]
    for s in plan.subvolumes:
        lines += _subvolume(s, default_timeline, default_keep, default_targets)
    for t in plan.targets:
        lines += _target(t)
    return "\n".join(lines) + "\n"


def _subvolume(s: SubPlan, default_timeline: str, default_keep: int, default_targets: list[str]) -> list[str]:
    origin = " and ".join(x for x in (f"snapper config {s.snapper}" if s.snapper else "", f"btrbk {s.btrbk}" if s.btrbk else "") if x)
    lines = ["", f"# from {origin}", *(f"# {c}" for c in s.comments), "[[subvolume]]", f"name = {_q(s.name)}", f"path = {_q(s.path)}"]
    if s.timeline != default_timeline:
        lines.append(f"timeline = {_q(s.timeline)}")
    if s.prechange_keep != default_keep:
        lines.append(f"prechange_keep = {s.prechange_keep}")
    if sorted(s.targets) != sorted(default_targets):
        lines.append(f"targets = {_list(s.targets)}")
    return lines


def _target(t: TargetPlan) -> list[str]:
    lines = ["", *(f"# {c}" for c in t.comments),
             "[[target]]", f"name = {_q(t.name)}", 'type = "btrfs"', f"url = {_q(t.url)}", f"keep = {_q(t.keep)}"]
    optional = {"compress": t.compress if t.compress != "none" else None, "ssh_identity": t.ssh_identity, "ssh_cipher": t.ssh_cipher}
    lines += [f"{key} = {_q(value)}" for key, value in optional.items() if value]
    if t.ssh_options:
        lines.append(f"ssh_options = {_list(t.ssh_options)}")
    return lines


def _q(text: str) -> str:
    return json.dumps(text, ensure_ascii=False)


def _list(texts: list[str]) -> str:
    return f"[{', '.join(_q(t) for t in texts)}]"
