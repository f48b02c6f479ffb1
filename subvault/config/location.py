"""Where the config is, and how much of a file can be one. Nothing is imported here
(snap-all's fast start, `cli/fast.py`, finds the config through this module too)."""

from __future__ import annotations

import os

DEFAULT_PATH = "/etc/subvault/subvault.toml"

# A config is a few KiB (one written by `adopt` for hundreds of subvolumes, some hundred).
MAX_CONFIG_BYTES = 4 << 20


def config_path(explicit: str | None = None) -> str:
    """Return the config path: --config, then $SUBVAULT_CONFIG, then the default."""
    return explicit or os.environ.get("SUBVAULT_CONFIG") or DEFAULT_PATH
