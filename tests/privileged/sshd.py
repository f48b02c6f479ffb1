"""A real sshd on 127.0.0.1 for tests: its own host key, one authorized client key.

`Sshd(dir, forced_command=None).start()` writes keys and configs under dir, starts
`sshd -D -e` on a free loopback port and returns once sshd reports it is listening
(read from its log, no sleeps). `stop()` terminates exactly the process it started.
"""

from __future__ import annotations

import os
import shlex
import socket
import subprocess
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path

import pytest

SSHD = "/usr/sbin/sshd"
REPO = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def serve_command(root: Path, *flags: str) -> str:
    """The forced command running this checkout's `subvault serve`."""
    return shlex.join([sys.executable, "-m", "subvault.cli.replication_cmds", "serve", "--root", str(root), *flags])


@dataclass
class Sshd:
    dir: Path
    forced_command: str | None = None
    port: int = 0
    proc: subprocess.Popen | None = None
    log: list[str] = field(default_factory=list)

    @property
    def client_key(self) -> Path:
        return self.dir / "client_key"

    @property
    def known_hosts(self) -> Path:
        return self.dir / "known_hosts"

    def ssh_options(self) -> list[str]:
        """The -o options a client needs (for TargetConf.ssh_options)."""
        return [
            f"UserKnownHostsFile={self.known_hosts}",
            "StrictHostKeyChecking=yes",
            "IdentitiesOnly=yes",
            "ConnectTimeout=10",
        ]

    def url(self, path: str | Path) -> str:
        return f"ssh://root@127.0.0.1:{self.port}{path}"

    def start(self) -> "Sshd":
        self.dir.mkdir(parents=True, exist_ok=True)
        os.chmod(self.dir, 0o700)
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # privilege separation dir sshd requires
        for name in ("host_key", "client_key"):
            subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(self.dir / name)], check=True)
        pub = (self.dir / "client_key.pub").read_text().strip()
        prefix = f'command="{self.forced_command.replace(chr(34), chr(92) + chr(34))}",restrict ' if self.forced_command else ""
        (self.dir / "authorized_keys").write_text(prefix + pub + "\n")
        self.port = free_port()
        host_pub = (self.dir / "host_key.pub").read_text().split()
        self.known_hosts.write_text(f"[127.0.0.1]:{self.port} {host_pub[0]} {host_pub[1]}\n")
        config = self.dir / "sshd_config"
        config.write_text(
            "\n".join(
                [
                    f"Port {self.port}",
                    "ListenAddress 127.0.0.1",
                    f"HostKey {self.dir / 'host_key'}",
                    f"AuthorizedKeysFile {self.dir / 'authorized_keys'}",
                    "PermitRootLogin prohibit-password",
                    "PasswordAuthentication no",
                    "KbdInteractiveAuthentication no",
                    f"PidFile {self.dir / 'sshd.pid'}",
                    "StrictModes no",
                    "UsePAM no",
                    f"SetEnv PYTHONPATH={REPO}",
                    "MaxStartups 100",
                    "MaxSessions 100",
                    "",
                ]
            )
        )
        self.proc = subprocess.Popen([SSHD, "-D", "-e", "-f", str(config)], stderr=subprocess.PIPE, text=True)
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.log.append(line)
            if "Server listening on 127.0.0.1" in line:
                break
        else:
            self.stop()
            raise RuntimeError("sshd did not start:\n" + "".join(self.log))
        threading.Thread(target=self._drain, daemon=True).start()
        return self

    def _drain(self) -> None:
        assert self.proc is not None and self.proc.stderr is not None
        for line in self.proc.stderr:
            self.log.append(line)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@pytest.fixture
def sshd(tmp_path):
    """A started sshd with no forced command; stopped after the test."""
    server = Sshd(tmp_path / "sshd").start()
    yield server
    server.stop()


@pytest.fixture
def make_sshd(tmp_path):
    """Factory: make_sshd(forced_command=None) -> started Sshd; all stopped after the test."""
    made: list[Sshd] = []

    def factory(forced_command: str | None = None, name: str = "sshd") -> Sshd:
        server = Sshd(tmp_path / f"{name}-{len(made)}", forced_command=forced_command).start()
        made.append(server)
        return server

    yield factory
    for s in made:
        s.stop()
