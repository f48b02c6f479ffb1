"""How btrbk reached a target directory, said the way subvault's [[target]] says it. Pure.

The planner writes it into the config; discovery uses it to list the directory, so adopt
connects exactly as the adopted config will.

Rules:
- A local target's url is its directory.
- ssh: btrbk's ssh_user (default root) and ssh_port go into the url, unless the url has
  its own; ssh_identity and ssh_cipher_spec (`default`: none) into their keys;
  ssh_compression yes and adopt --ssh-option into ssh_options.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from subvault.adopt.btrbk_conf import BtrbkTarget


@dataclass(frozen=True)
class Connection:
    """A btrbk target reached as subvault will: url with user and port, identity, cipher, -o options."""

    url: str
    directory: str
    identity: str | None = None
    cipher: str | None = None
    options: tuple[str, ...] = ()


def connection(t: BtrbkTarget, extra_options: Sequence[str] = ()) -> Connection:
    """Return the subvault connection for a btrbk target; `extra_options` are adopt --ssh-option's."""
    if not t.is_ssh:
        return Connection(t.url.rstrip("/") or "/", t.url.rstrip("/") or "/")
    hostport, _, path = t.url[len("ssh://"):].partition("/")
    directory = ("/" + path).rstrip("/") or "/"
    if "@" not in hostport:
        hostport = f"{t.get('ssh_user') or 'root'}@{hostport}"
    if t.get("ssh_port") and not _has_port(hostport.split("@", 1)[1]):
        hostport = f"{hostport}:{t.get('ssh_port')}"
    cipher = t.get("ssh_cipher_spec")
    options = (["Compression=yes"] if t.get("ssh_compression") == "yes" else []) + list(extra_options)
    return Connection(f"ssh://{hostport}{directory}", directory, t.get("ssh_identity") or None,
                      cipher if cipher not in ("", "default") else None, tuple(options))


def _has_port(host: str) -> bool:
    """Whether `host`, `host:port`, `[v6]` or `[v6]:port` names a port (a bare v6 address's colons do not)."""
    if host.startswith("["):
        return host.rpartition("]")[2].startswith(":")
    return ":" in host
