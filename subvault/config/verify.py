"""The checks `config check` adds to loading: deeper (Apprise, age) and about this host.

Loading (schema.py, load.py) checks the shape of every key on every command. These
checks run in `config check` (and the URL ones in `check`):
- errors: every notify URL as Apprise parses it; a recipient still the example's
  placeholder "age1…" (loading checks every other recipient as age parses it);
- warnings: a subvolume path that does not exist or is not a btrfs subvolume (a disk
  may be unmounted on purpose); a config holding notify tokens that group or others
  can read.
Each line is "where: what is wrong (expected …)"; the caller prefixes the file.
"""

from __future__ import annotations

import os
import stat
from typing import Any

from subvault.btrfs import adapter
from subvault.config.rules import RECIPIENT_PLACEHOLDER
from subvault.config.schema import Config
from subvault.errors import SubvaultError
from subvault.notify.apprise_notify import validate_url
from subvault.secrets import read_private


def placeholder_errors(cfg: Config) -> list[str]:
    """Recipients still the brief's placeholder "age1…" (loading accepts it, so the brief's example loads)."""
    return [
        f'target "{t.name}": recipients[{i}]: "{r}" is the example\'s placeholder '
        '(expected the "age1…" line that `age-keygen -y IDENTITY` prints)'
        for t in cfg.target for i, r in enumerate(t.recipients) if r == RECIPIENT_PLACEHOLDER
    ]


def notify_urls(cfg: Config) -> list[str]:
    """The Apprise URLs: notify.urls plus the lines of notify.urls_file (refused unless private)."""
    urls = list(cfg.notify.urls)
    if cfg.notify.urls_file:
        text = read_private(cfg.notify.urls_file, "notify.urls_file")
        urls += [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    return urls


def notify_errors(cfg: Config) -> list[str]:
    """Apprise parses each notify URL (inline and from notify.urls_file)."""
    out = []
    urls = notify_urls(cfg)
    for i, url in enumerate(urls):
        err = validate_url(url)
        if err:
            where = f"urls[{i}]" if i < len(cfg.notify.urls) else f"urls_file line {i - len(cfg.notify.urls) + 1}"
            out.append(f"notify: {where}: {err}")
    return out


def deep_errors(cfg: Config, data: dict[str, Any]) -> list[str]:
    """The errors loading does not catch (so that loading stays fast and the brief's example loads).

    cfg holds the tables that loaded; data is the parsed TOML.
    """
    return placeholder_errors(cfg) + notify_errors(cfg)


def host_warnings(cfg: Config) -> list[str]:
    """Subvolume paths that are missing or are not btrfs subvolumes here (warnings: a disk may be unmounted)."""
    out = []
    for s in cfg.subvolume:
        where = f'subvolume "{s.name}": path: "{s.path}"'
        if not os.path.exists(s.path):
            out.append(f"{where} does not exist here (expected a mounted btrfs subvolume; is its disk mounted?)")
            continue
        try:
            ok = adapter.is_subvolume(s.path)
        except (SubvaultError, OSError):
            ok = False
        if not ok:
            out.append(f"{where} is not a btrfs subvolume (expected a subvolume, e.g. made with `btrfs subvolume create`)")
    return out


def exposure_warnings(cfg: Config, path: str) -> list[str]:
    """Warn when the config holds notify tokens inline and group or others can read it."""
    if not cfg.notify.urls:
        return []
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return []
    if not mode & (stat.S_IRGRP | stat.S_IROTH):
        return []
    return [
        f"{path} holds notify tokens (notify.urls) and is readable by group or others (mode {stat.S_IMODE(mode):04o}); "
        f"run: chmod 600 {path}, or move the URLs to notify.urls_file"
    ]
