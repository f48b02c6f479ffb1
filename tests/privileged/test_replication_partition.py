"""A network partition during replication, in a network namespace this test makes itself.

The Pi is an sshd inside a fresh namespace, reached over a veth pair with addresses
that exist only between the two ends. This kernel has no sch_netem, so the link is
slowed with tbf and the partition is made by taking the host end of the veth down
once data is flowing (triggered by the transfer's own progress report, no sleeps).
"""

from __future__ import annotations

import os
import subprocess
import uuid

import pytest

from subvault.config.load import load_config
from subvault.context import Context
from subvault.demo.testbed_ssh import Sshd
from subvault.run.replicate import replicate

NS_IP, HOST_IP = "10.231.7.2", "10.231.7.1"


def ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True)


@pytest.fixture
def netns():
    name = f"svt-{uuid.uuid4().hex[:6]}"
    host_if, ns_if = f"{name}h", f"{name}n"
    ip("netns", "add", name)
    try:
        ip("link", "add", host_if, "type", "veth", "peer", "name", ns_if)
        ip("link", "set", ns_if, "netns", name)
        ip("addr", "add", f"{HOST_IP}/30", "dev", host_if)
        ip("link", "set", host_if, "up")
        ip("-n", name, "addr", "add", f"{NS_IP}/30", "dev", ns_if)
        ip("-n", name, "link", "set", ns_if, "up")
        ip("-n", name, "link", "set", "lo", "up")
        yield name, host_if
    finally:
        pids = subprocess.run(["ip", "netns", "pids", name], capture_output=True, text=True).stdout.split()
        if pids:
            subprocess.run(["kill", "-9", *pids], capture_output=True)
        subprocess.run(["ip", "link", "del", host_if], capture_output=True)
        subprocess.run(["ip", "netns", "del", name], capture_output=True)


def test_network_partition_is_detected_as_a_stall_and_the_next_run_resumes_incrementally(homelab, make_fs, netns, tmp_path):
    ns, host_if = netns
    pi = make_fs("pi")
    (pi.mountpoint / "backup").mkdir()
    server = Sshd(tmp_path / "sshd", address=NS_IP, netns=ns, port=2222).start()
    try:
        opts = ", ".join(f'"{o}"' for o in [*server.ssh_options(), "ServerAliveInterval=5", "ServerAliveCountMax=2"])
        homelab.config.write_text(
            homelab.config.read_text().replace("prechange_keep = 10", 'prechange_keep = 10\ntargets = ["pi"]')
            + f'\n[[target]]\nname = "pi"\ntype = "btrfs"\nurl = "{server.url(pi.mountpoint / "backup")}"\n'
            f'ssh_identity = "{server.client_key}"\nssh_options = [{opts}]\nstall_minutes = 0.05\nparallel = 1\n'
        )
        homelab.cli("snapshot")
        first = homelab.cli("replicate", "--json")
        assert first.returncode == 0
        with open(homelab.paths["var_lib_pvc"] / "nextcloud" / "big.bin", "wb") as fh:
            fh.write(os.urandom(24 << 20))
        homelab.cli("snapshot", "--force")
        subprocess.run(["tc", "qdisc", "add", "dev", host_if, "root", "tbf", "rate", "8mbit", "burst", "32kbit", "latency", "400ms"], check=True)
        cut = []

        def progress(subject):
            def report(n: int) -> None:
                if n > (1 << 20) and not cut:
                    ip("link", "set", host_if, "down")  # the partition
                    cut.append(subject)
            return report

        out = replicate(Context(load_config(homelab.config)), progress=progress)
        assert cut, "the transfer never got going"
        assert any("stalled: no data for 3s" in e for e in out.errors), out.errors
        # no waiting on a dead link per subvolume: the others failed with the link or were skipped
        assert all(any(w in e for w in ("stalled", "skipped", "connection")) for e in out.errors), out.errors
        ip("link", "set", host_if, "up")
        subprocess.run(["tc", "qdisc", "del", "dev", host_if, "root"], check=True)
        again = replicate(Context(load_config(homelab.config)))
        assert not again.errors, again.errors
        sent = [i for i in again.items if i.action == "sent"]
        assert sent and not any(i.data["full"] for i in sent), "zero forced full sends after the partition"
        newest = sorted((pi.mountpoint / "backup").glob("*/var_lib_pvc/var_lib_pvc.*"))[-1]
        assert (newest / "nextcloud" / "big.bin").read_bytes() == (homelab.paths["var_lib_pvc"] / "nextcloud" / "big.bin").read_bytes()
    finally:
        server.stop()
