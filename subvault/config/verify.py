"""The checks `config check` adds to loading: deeper (Apprise, age) and about this host.

Loading (schema.py, load.py) checks the shape of every key on every command. These
checks run in `config check` (and the URL ones in `check`):
- errors: every notify URL as Apprise parses it; every recipient as age parses it
  (bech32 with a valid checksum);
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
from subvault.config.schema import Config
from subvault.errors import SubvaultError
from subvault.notify.apprise_notify import validate_url
from subvault.secrets import read_private

_BECH32 = "qpzry9x8gf2tvdw0s3jn54khce6mua7l"
_GEN = (0x3B6A57B2, 0x26508E6D, 0x1EA119FA, 0x3D4233DD, 0x2A1462B3)


def _polymod(values: list[int]) -> int:
    chk = 1
    for v in values:
        top = chk >> 25
        chk = (chk & 0x1FFFFFF) << 5 ^ v
        for i in range(5):
            chk ^= _GEN[i] if (top >> i) & 1 else 0
    return chk


def is_age_recipient(text: str) -> bool:
    """True for what age accepts with -r as a public key: bech32 "age1…" (X25519, 32 bytes) or "age1PLUGIN1…"."""
    if text != text.lower() or not text.startswith("age1"):
        return False
    hrp, sep, data = text.rpartition("1")
    if not sep or not hrp.startswith("age") or len(data) < 6 or any(c not in _BECH32 for c in data):
        return False
    values = [_BECH32.index(c) for c in data]
    expanded = [ord(c) >> 5 for c in hrp] + [0] + [ord(c) & 31 for c in hrp]
    if _polymod(expanded + values) != 1:
        return False
    if hrp == "age":
        return (len(values) - 6) * 5 // 8 == 32  # an X25519 public key
    return True


def recipient_errors(data: dict[str, Any]) -> list[str]:
    """Check every object target's recipients in the parsed TOML (also of a target that failed to load)."""
    out = []
    targets = data.get("target")
    for t in targets if isinstance(targets, list) else []:
        if not isinstance(t, dict) or t.get("type") != "object" or not isinstance(t.get("recipients"), list):
            continue
        for i, r in enumerate(t["recipients"]):
            if isinstance(r, str) and not is_age_recipient(r):
                shown = r if r.startswith("age1") else f"{r[:10]}…"  # never echo an identity
                out.append(
                    f'target "{t.get("name")}": recipients[{i}]: "{shown}" is not an age public key '
                    '(expected the "age1…" line that `age-keygen -y IDENTITY` prints)'
                )
    return out


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
    return recipient_errors(data) + notify_errors(cfg)


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
