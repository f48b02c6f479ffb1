"""btrbk's targets of one subvolume, adopted as [[target]]s. Pure.

Rules:
- A btrbk send-receive target becomes a [[target]] whose url is btrbk's target directory,
  reached as btrbk reached it (`connection.py`); subvolumes sending to the same directory
  share one target, named after its host (or, local, after the directory).
- ssh settings that differ for the same directory are refused, naming btrbk.conf:LINE:
  subvault has one set per target.
- stream_compress becomes zstd on an ssh target and nothing on a local one; btrbk
  options subvault has no use for become comments.
- Raw targets are not adopted: reported, and a comment in the config. A target listed
  twice for one subvolume is adopted once.
"""

from __future__ import annotations

from subvault.adopt.btrbk_conf import BtrbkTarget
from subvault.adopt.connection import connection
from subvault.adopt.found import FoundBtrbk, Inputs
from subvault.adopt.keeps import share_target_keep, target_keep
from subvault.adopt.moves import entry_moves
from subvault.adopt.names import unique_name
from subvault.adopt.planned import AdoptPlan, TargetPlan
from subvault.adopt.source import AdoptInputError

Targets = dict[tuple[object, ...], TargetPlan]  # by btrbk target url, for every subvolume


def plan_targets(plan: AdoptPlan, inp: Inputs, fb: FoundBtrbk, name: str, targets: Targets, comments: list[str]) -> list[str]:
    """Adopt fb's targets and plan the moves of its entries there; return the names of its targets."""
    sub_targets: list[str] = []
    for i, t in enumerate(fb.sub.targets):
        if t.type == "raw":
            msg = (f"raw target {t.url} ({inp.btrbk_where(t.line)}): not adopted — its .btrfs stream files stay where they are; "
                   "add an object target (type = \"object\") for an encrypted offsite copy")
            plan.manual.append(msg)
            comments.append(msg)
            continue
        tp = _target(plan, inp, t, targets, name)
        if tp.name in sub_targets:  # btrbk lists it twice for this subvolume: one target, adopted once
            msg = f"{inp.btrbk_where(t.line)}: target {t.url} is listed again for {fb.sub.path}; adopted once"
            comments.append(msg)
            plan.found.append(msg)
            continue
        sub_targets.append(tp.name)
        found = fb.entries[i] if i < len(fb.entries) else "not listed"
        entry_moves(plan, inp.host, fb, t, tp, name, found)
    return sub_targets


def _target(plan: AdoptPlan, inp: Inputs, t: BtrbkTarget, targets: Targets, sub_name: str) -> TargetPlan:
    """The [[target]] for btrbk target t of subvolume sub_name: made on first sight, shared after."""
    keep, comments = target_keep(inp, t)
    conn = connection(t, inp.ssh_options)
    url, directory, identity, cipher, options = conn.url, conn.directory, conn.identity, conn.cipher, list(conn.options)
    compress = "none"
    if t.is_ssh:
        sc = t.get("stream_compress")
        if sc not in ("no", ""):
            compress = "zstd"
            if sc != "zstd":
                comments.append(f"{inp.btrbk_where(t.line_of('stream_compress'))}: stream_compress {sc}: subvault compresses with zstd")
    elif t.get("stream_compress") not in ("no", ""):
        comments.append(f"{inp.btrbk_where(t.line_of('stream_compress'))}: stream_compress on a local target: not needed, not written")
    if t.get("incremental") == "no":
        comments.append(f"{inp.btrbk_where(t.line_of('incremental'))}: incremental no: subvault always sends incrementally when a parent exists")
    key = (url,)
    if key not in targets:
        host = url[len("ssh://"):].split("/", 1)[0].rsplit("@", 1)[-1].split(":")[0] if t.is_ssh else ""
        wanted = host.split(".")[0] if host else (directory.rstrip("/").rsplit("/", 1)[-1] or "local")
        name = unique_name(wanted, {tp.name for tp in targets.values()}, "target")
        targets[key] = TargetPlan(name, url, keep, compress, identity, cipher, options, comments, directory.rstrip("/") or "/",
                                  {sub_name: (keep, t.line)}, t.line)
        plan.found.append(f"btrbk target {t.url} ({inp.btrbk_where(t.line)}) → [[target]] {name}: keep {keep}")
        return targets[key]
    tp = targets[key]
    if (identity, cipher, options) != (tp.ssh_identity, tp.ssh_cipher, tp.ssh_options):
        raise AdoptInputError(
            inp.btrbk_file, t.line,
            f"target {t.url} is reached with other ssh_identity/ssh_cipher_spec/ssh_compression than at line {tp.line}; "
            "subvault has one set per target directory: make them the same in btrbk.conf and run adopt again",
        )
    if compress == "zstd":
        tp.compress = "zstd"
    share_target_keep(inp, tp, sub_name, keep, t.line)
    for c in comments:
        if c not in tp.comments:
            tp.comments.append(c)
    return tp
