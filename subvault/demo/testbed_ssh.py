"""A real sshd on 127.0.0.1 standing in for the Pi: for `subvault demo` and the tests.

`Sshd(dir, forced_command=None).start()` writes keys and configs under dir, starts
`sshd -D -e` on a free loopback port and returns once sshd reports it is listening
(read from its log, no sleeps). `stop()` terminates exactly the process it started.
Only 127.0.0.1 is ever used.

`HungListener(banner=False)` stands in for a hung Pi: it accepts every TCP connection
and never sends a byte (a wedged sshd, or a port forward to nothing); with banner=True
it sends an SSH banner and then nothing (a server stuck in key exchange). It counts
the connections it accepted and closes them all on `close()`. `refused_port()` is a
loopback port where connecting is refused.
"""

from __future__ import annotations

import os
import shlex
import socket
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from subvault import process

SSHD = "/usr/sbin/sshd"
REPO = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def installed_subvault() -> Path:
    """The `subvault` console script installed next to this interpreter (the venv's): what users run."""
    script = Path(sys.executable).parent / "subvault"
    if not os.access(script, os.X_OK):
        raise FileNotFoundError(f"no subvault console script at {script}: install this checkout (pip install -e .)")
    return script


def serve_command(root: Path, *flags: str) -> str:
    """The forced command: the installed `subvault serve`, as in a user's authorized_keys."""
    return shlex.join([str(installed_subvault()), "serve", "--root", str(root), *flags])


@dataclass
class Sshd:
    dir: Path
    forced_command: str | None = None
    port: int = 0
    address: str = "127.0.0.1"
    netns: str | None = None  # run inside this network namespace (which the caller made)
    env: dict[str, str] = field(default_factory=dict)  # more SetEnv for sessions (e.g. a PATH without python3)
    proc: process.Process[str] | None = None
    log: list[str] = field(default_factory=list)

    @property
    def client_key(self) -> Path:
        return self.dir / "client_key"

    @property
    def known_hosts(self) -> Path:
        return self.dir / "known_hosts"

    def ssh_options(self) -> list[str]:
        """The -o options a client needs (for TargetConf.ssh_options)."""
        return [f"UserKnownHostsFile={self.known_hosts}", "StrictHostKeyChecking=yes", "IdentitiesOnly=yes", "ConnectTimeout=10"]

    def url(self, path: str | Path) -> str:
        return f"ssh://root@{self.address}:{self.port}{path}"

    def target_toml(self, name: str, path: str | Path, keep: str = "24h 8d 5w", extra: str = "") -> str:
        opts = ", ".join(f'"{o}"' for o in self.ssh_options())
        return (
            f'[[target]]\nname = "{name}"\ntype = "btrfs"\nurl = "{self.url(path)}"\nkeep = "{keep}"\n'
            f'ssh_identity = "{self.client_key}"\nssh_options = [{opts}]\n{extra}\n'
        )

    def start(self) -> Sshd:
        self.dir.mkdir(parents=True, exist_ok=True)
        os.chmod(self.dir, 0o700)
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # privilege separation dir sshd requires
        for name in ("host_key", "client_key"):
            process.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(self.dir / name)], what="ssh-keygen")
        pub = (self.dir / "client_key.pub").read_text().strip()
        prefix = f'command="{self.forced_command.replace(chr(34), chr(92) + chr(34))}",restrict ' if self.forced_command else ""
        (self.dir / "authorized_keys").write_text(prefix + pub + "\n")
        self.port = self.port or free_port()
        host_pub = (self.dir / "host_key.pub").read_text().split()
        self.known_hosts.write_text(f"[{self.address}]:{self.port} {host_pub[0]} {host_pub[1]}\n")
        config = self.dir / "sshd_config"
        config.write_text(
            "\n".join(
                [
                    f"Port {self.port}",
                    f"ListenAddress {self.address}",
                    f"HostKey {self.dir / 'host_key'}",
                    f"AuthorizedKeysFile {self.dir / 'authorized_keys'}",
                    "PermitRootLogin prohibit-password",
                    "PasswordAuthentication no",
                    "KbdInteractiveAuthentication no",
                    f"PidFile {self.dir / 'sshd.pid'}",
                    "StrictModes no",
                    "UsePAM no",
                    f"SetEnv PYTHONPATH={REPO}" + "".join(f" {k}={v}" for k, v in self.env.items()),  # sshd reads one SetEnv line
                    "MaxStartups 100",
                    "ClientAliveInterval 2",
                    "ClientAliveCountMax 2",
                    "MaxSessions 100",
                    "",
                ]
            )
        )
        in_netns = ["ip", "netns", "exec", self.netns] if self.netns else []
        self.proc = proc = process.spawn([*in_netns, SSHD, "-D", "-e", "-f", str(config)])
        stderr = proc.stderr
        assert stderr is not None  # spawn always pipes stderr
        for line in stderr:
            self.log.append(line)
            if f"Server listening on {self.address}" in line:
                break
        else:
            self.stop()
            raise RuntimeError("sshd did not start:\n" + "".join(self.log))
        threading.Thread(target=self._drain, args=(stderr,), daemon=True).start()
        return self

    def _drain(self, stderr: IO[str]) -> None:
        for line in stderr:
            self.log.append(line)

    def stop(self) -> None:
        proc = self.proc
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except process.TimeoutExpired:
                proc.kill()
                proc.wait()


class HungListener:
    def __init__(self, *, banner: bool = False) -> None:
        self.banner = banner
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self.accepted: list[socket.socket] = []
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return  # closed
            self.accepted.append(conn)
            if self.banner:
                conn.sendall(b"SSH-2.0-OpenSSH_9.2p1 Debian-2\r\n")

    def close(self) -> None:
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()
        self._thread.join()
        for conn in self.accepted:
            conn.close()

    def __enter__(self) -> HungListener:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def refused_port() -> int:
    """A loopback port nothing listens on (bound, then closed: connecting is refused)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port
