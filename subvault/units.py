"""Numbers for a person: human sizes. Text output uses these; JSON keeps exact numbers."""

from __future__ import annotations


def human_size(n: int | float | None) -> str:
    """Return a size for a person: 512 B, 8.0 MiB, 1.2 GiB (binary units, one decimal)."""
    if n is None:
        return "-"
    size = float(n)
    if abs(size) < 1024:
        return f"{int(size)} B"
    for unit in ("KiB", "MiB", "GiB", "TiB"):
        size /= 1024
        if abs(size) < 1024:
            return f"{size:.1f} {unit}"
    return f"{size / 1024:.1f} PiB"
