"""S3 credentials from a file of `AWS_ACCESS_KEY_ID=...` lines, or from the environment.

Rules (invariant 11):
- A credentials file readable by group or others is refused; it must be 0600 or 0400.
- Every secret read is registered with `subvault.secrets.mask()` before anything can
  print it, and no message from here contains a value.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from subvault.secrets import SecretsFileExposed, mask, read_private
from subvault.stores.base import StoreAuthError

ACCESS_KEY = "AWS_ACCESS_KEY_ID"
SECRET_KEY = "AWS_SECRET_ACCESS_KEY"
SESSION_TOKEN = "AWS_SESSION_TOKEN"


@dataclass(frozen=True)
class Credentials:
    """An access key pair (and optional session token). repr never shows the values."""

    access_key_id: str = field(repr=False)
    secret_access_key: str = field(repr=False)
    session_token: str | None = field(default=None, repr=False)
    source: str = ""


def parse_env_lines(text: str) -> dict[str, str]:
    """Given `KEY=VALUE` lines (optional `export `, quotes, # comments), return the mapping."""
    values: dict[str, str] = {}
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        if line.startswith("export "):
            line = line[len("export "):].lstrip()
        name, _, value = line.partition("=")
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        values[name.strip()] = value
    return values


def _from_mapping(values: Mapping[str, str], source: str) -> Credentials | None:
    access, secret = values.get(ACCESS_KEY, ""), values.get(SECRET_KEY, "")
    if not access and not secret:
        return None
    if not access or not secret:
        raise StoreAuthError(f"{source}: needs both {ACCESS_KEY} and {SECRET_KEY}")
    token = values.get(SESSION_TOKEN) or None
    for secret_value in (access, secret, token):
        if secret_value:
            mask(secret_value)
    return Credentials(access, secret, token, source)


def load_credentials_file(path: str | Path) -> Credentials:
    """Given a credentials file, return its Credentials.

    Raise StoreAuthError if it is missing, unreadable, readable by group or others,
    or lacks either key.
    """
    path = Path(path)
    try:
        text = read_private(path, "credentials file")
    except SecretsFileExposed as exc:
        raise StoreAuthError(str(exc)) from None
    creds = _from_mapping(parse_env_lines(text), f"credentials file {path}")
    if creds is None:
        raise StoreAuthError(f"credentials file {path} has no {ACCESS_KEY}/{SECRET_KEY} lines")
    return creds


def resolve_credentials(path: str | Path | None, environ: Mapping[str, str] | None = None) -> Credentials:
    """Return credentials from `path` if given, else from the environment.

    Raise StoreAuthError if neither provides a key pair.
    """
    if path is not None:
        return load_credentials_file(path)
    creds = _from_mapping(os.environ if environ is None else environ, "environment")
    if creds is None:
        raise StoreAuthError(
            f"no S3 credentials: set the target's credentials = FILE, or {ACCESS_KEY} and {SECRET_KEY} in the environment"
        )
    return creds
