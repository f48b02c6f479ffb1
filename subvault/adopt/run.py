"""`subvault adopt`: discover, plan, write the config, and (with --apply) hand over."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from subvault.adopt import discover
from subvault.adopt.apply import apply_plan
from subvault.adopt.found import Inputs
from subvault.adopt.plan import plan_adoption
from subvault.adopt.planned import AdoptPlan
from subvault.btrfs.snapdir import write_atomic
from subvault.config.load import parse_config
from subvault.context import host_name
from subvault.errors import UsageError
from subvault.results import Item, Outcome
from subvault.timeutil import local_zone

SYSROOT_ENV = "SUBVAULT_SYSROOT"


def default_root() -> str:
    """The installation's root: $SUBVAULT_SYSROOT (tests, chroots) or /."""
    return os.environ.get(SYSROOT_ENV) or "/"


@dataclass
class AdoptRequest:
    root: str = "/"
    snapper: bool = True
    use_btrbk: bool = True
    btrbk_file: str | None = None  # None: <root>/etc/btrbk/btrbk.conf if it exists
    write_path: str | None = None
    config_path: str = "/etc/subvault/subvault.toml"
    apply: bool = False
    dry_run: bool = False
    force: bool = False
    ssh_options: Sequence[str] = field(default_factory=list)
    timezone: str | None = None


def adopt(req: AdoptRequest, *, host: str | None = None) -> tuple[AdoptPlan, Outcome]:
    """Read the installation, plan the adoption, and do what the request asks.

    Raise AdoptInputError (exit 2) for a configuration subvault cannot take over, naming file:line.
    """
    tz = local_zone(req.timezone)
    btrbk_file = req.btrbk_file if req.use_btrbk else None
    if btrbk_file is None and req.use_btrbk:
        default = discover.under(req.root, "/" + discover.BTRBK_CONF)
        btrbk_file = default if Path(default).is_file() else None
    conf = discover.btrbk_config(btrbk_file) if btrbk_file else None
    inp = Inputs(
        host=host or host_name(),
        state_dir=discover.under(req.root, "/var/lib/subvault"),
        snapper=discover.snapper_configs(req.root) if req.snapper else [],
        btrbk=conf,
        btrbk_found=discover.btrbk_state(conf, tz, req.ssh_options) if conf else [],
        schedulers=discover.schedulers(req.root) if conf else [],
        snapper_root=req.root,
        ssh_options=list(req.ssh_options),
        config_path=req.write_path or req.config_path,
    )
    plan = plan_adoption(inp)
    if not plan.subvolumes:
        raise UsageError("nothing to adopt: no snapper config and no btrbk subvolume found (see --snapper, --btrbk FILE, --root)")
    parse_config(plan.toml, name="the adopted config")  # what adopt writes must load
    out = Outcome("adopt", dry_run=req.dry_run)
    dest = req.write_path or (req.config_path if req.apply else None)
    if req.dry_run:
        if dest:
            out.items.append(Item(dest, "would-write", "the config below"))
        return plan, out
    if req.apply:
        from subvault.adopt.apply import preflight

        preflight(plan)  # before anything changes, the config file included
    if dest and req.apply and not req.write_path and Path(dest).exists() and not req.force:
        # A second --apply (or one after --write and review): the config in place is the user's now.
        out.items.append(Item(dest, "kept", "the existing config (--force replaces it with the adopted one)"))
    elif dest:
        _write(dest, plan.toml, force=req.force)
        out.items.append(Item(dest, "wrote", "subvault.toml (mode 0600)"))
    if req.apply:
        apply_plan(plan, root=req.root, config_path=dest or req.config_path, out=out)
    return plan, out


def _write(dest: str, text: str, *, force: bool) -> None:
    path = Path(dest)
    if path.is_dir():
        raise UsageError(f"--write {path}: is a directory; give the config file's path, e.g. {path / 'subvault.toml'}")
    if path.exists() and not force and path.read_text(errors="replace") != text:
        raise UsageError(f"{path} exists and differs from the adopted config; pass --force to replace it, or --write another path")
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, text, 0o600)
