"""The rules the config schema's tables apply: each returns a problem or None.

A problem reads "key: what is wrong (expected …)"; `fail` raises them all at once, so a
table reports every one of its problems, not only the first. Pure: no I/O.
"""

from __future__ import annotations

import posixpath
import re
from pathlib import PurePosixPath
from urllib.parse import SplitResult, urlsplit

from subvault.plan.retention import RetentionSyntaxError, parse_policy
from subvault.timeutil import parse_duration

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


def fail(*problems: str | None) -> None:
    """Raise one ValueError listing every problem given (one a line); return if there are none."""
    found = [p for p in problems if p]
    if found:
        raise ValueError("\n".join(found))


def retention(key: str, value: str) -> str | None:
    try:
        parse_policy(value)
    except RetentionSyntaxError as exc:
        return f"{key}: {exc}"
    return None


def duration(key: str, value: str, *, positive: bool = False) -> str | None:
    try:
        length = parse_duration(value)
    except ValueError as exc:
        return f"{key}: {exc}"
    if positive and not length:
        return f'{key}: "{value}" must be longer than zero (expected e.g. "30d")'
    return None


def name(value: str, key: str = "name") -> str | None:
    if not NAME_RE.match(value):
        return f'{key}: "{value}" is not a valid name (expected letters, digits, "_", "-" or ".")'
    return None


def listed_once(key: str, names: list[str] | None) -> list[str]:
    seen: set[str] = set()
    twice = []
    for n in names or []:
        if n in seen:
            twice.append(f'{key}: "{n}" is listed twice (expected each target once)')
        seen.add(n)
    return twice


def ssh_url(value: str, expected: str) -> str | None:
    """Check an ssh:// URL's shape; a host starting with "-" would reach ssh as an option."""

    try:
        parts = urlsplit(value)
    except ValueError:  # e.g. an unclosed "[" (IPv6)
        return f'url: "{value}" is not a URL (expected "{expected}")'
    if parts.scheme != "ssh" or not parts.hostname or not parts.path.startswith("/"):
        return f'url: "{value}" is not an ssh URL (expected "{expected}")'
    if parts.hostname.startswith("-") or (parts.username or "").startswith("-"):
        return f'url: "{value}": the host and user must not start with "-" (expected "{expected}")'
    try:
        number = parts.port  # reading it validates the port
    except ValueError:
        number = -1
    if number is not None and not 1 <= number <= 65535:
        return f'url: "{value}": the port must be a number from 1 to 65535 (expected "{expected}")'
    return None


def object_url(url: str) -> str | None:
    """An object target's URL: s3://bucket[/prefix] or file:///absolute/path."""

    expected = '(expected "s3://bucket/prefix" or "file:///path")'
    try:
        parts = urlsplit(url)
    except ValueError:
        return f'url: "{url}" is not a URL {expected}'
    if parts.scheme == "s3" and parts.netloc and not any(c in parts.netloc for c in "@:[]"):
        return None
    if parts.scheme == "file" and url.startswith("file:///"):
        try:
            abs_path("url", parts.path)
        except ValueError as exc:
            return str(exc)
        return None
    return f'url: "{url}" is not an object target {expected}'


def abs_path(key: str, value: str) -> str:
    """Return value normalised; raise ValueError unless it is an absolute path without ".." or control characters."""
    if any(ord(c) < 32 or c == "\x7f" for c in value):
        raise ValueError(f"{key}: {value!r} contains a control character (expected a plain absolute path)")
    if not value.startswith("/"):
        raise ValueError(f'{key}: "{value}" is not an absolute path (expected e.g. "/var/lib/pvc")')
    if ".." in PurePosixPath(value).parts:
        raise ValueError(f'{key}: "{value}" contains ".." (expected the path itself, e.g. "{posixpath.normpath(value)}")')
    return str(PurePosixPath(value))


def unique(what: str, names: list[str]) -> list[str]:
    seen: set[str] = set()
    twice = []
    for n in names:
        if n in seen:
            twice.append(f'{what} "{n}" is defined twice')
        seen.add(n)
    return twice


def norm(path: str) -> str:
    """A path as the filesystem sees it: no trailing "/", no "//", ".", or ".."."""

    return "/" + posixpath.normpath(path or "/").lstrip("/")


def port(parts: SplitResult) -> int | None:
    try:
        port: int | None = parts.port
        return port
    except ValueError:
        return None


# age recipients: bech32 (BIP 173) strings, checked here so that every command refuses a
# key age would refuse, before anything is uploaded.
_BECH32 = "qpzry9x8gf2tvdw0s3jn54khce6mua7l"
_GEN = (0x3B6A57B2, 0x26508E6D, 0x1EA119FA, 0x3D4233DD, 0x2A1462B3)
# The brief's example says `recipients = ["age1…"]` and must load as written; `config
# check` reports the placeholder (verify.py), and age refuses it before any upload.
RECIPIENT_PLACEHOLDER = "age1…"


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


def recipient(i: int, value: str) -> str | None:
    """recipients[i] must be an age public key; a value that could be an identity is shown by its first characters only."""
    if value == RECIPIENT_PLACEHOLDER or is_age_recipient(value):
        return None
    shown = value if value.startswith("age1") and len(value) <= 100 else f"{value[:10]}…"
    hint = "" if value.startswith("age1") else "; never put the identity here"
    return (f'recipients[{i}]: "{shown}" is not an age public key '
            f'(expected the "age1…" line that `age-keygen -y IDENTITY` prints{hint})')
