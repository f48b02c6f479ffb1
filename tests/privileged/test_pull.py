"""Pull mode: the target pulls over a key that only allows `serve --send-only` on the source."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from sshd import make_sshd, serve_command  # noqa: F401 - fixture

from subvault.btrfs import adapter


def _puller_config(tmp_path, server, pi, homelab, subvolumes, *, puller: str | None = "pi", keep: str | None = None) -> Path:
    """Write the Pi's config: one [[source]] (this sshd) with the given homelab subvolumes."""
    opts = ", ".join(f'"{o}"' for o in server.ssh_options())
    lines = ["[defaults]", f'state_dir = "{tmp_path}/pi-state"', "", "[[source]]", 'name = "vps1"',
             f'url = "ssh://root@127.0.0.1:{server.port}/"', f'dest = "{pi.mountpoint}"',
             f'ssh_identity = "{server.client_key}"', f"ssh_options = [{opts}]"]
    lines += [f'keep = "{keep}"'] if keep else []
    lines += [f'puller = "{puller}"'] if puller else []
    for name in subvolumes:
        lines += ["", "[[source.subvolume]]", f'name = "{name}"', f'path = "{homelab.paths[name]}"']
    path = tmp_path / "pi.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


def test_pull_full_then_incremental_through_send_only_key(homelab, make_fs, make_sshd, tmp_path):
    homelab.cli("snapshot")
    server = make_sshd(serve_command(homelab.fs.mountpoint, "--send-only", "--puller", "pi"))
    pi = make_fs("pi")
    puller = _puller_config(tmp_path, server, pi, homelab, ["var_lib_pvc", "home"], keep="24h 8d 5w")
    from conftest import run_cli

    first = json.loads(run_cli("--config", str(puller), "pull", "--json").stdout)["result"]["items"]
    pulled = [i for i in first if i["action"] == "pulled"]
    assert len(pulled) == 2 and all(i["data"]["full"] for i in pulled)
    assert all(i["data"]["bytes"] > 10_000 for i in pulled), "the stream is counted through a multiplexed ssh too"
    (homelab.paths["var_lib_pvc"] / "nextcloud" / "new.txt").write_text("pulled later\n")
    homelab.cli("snapshot", "--force")
    second = json.loads(run_cli("--config", str(puller), "pull", "--json").stdout)["result"]["items"]
    incs = [i for i in second if i["action"] == "pulled"]
    assert len(incs) == 2 and not any(i["data"]["full"] for i in incs)
    container = pi.mountpoint / "vps1" / "var_lib_pvc"
    newest = sorted(p for p in container.iterdir())[-1]
    assert (newest / "nextcloud" / "new.txt").read_text() == "pulled later\n"
    info = adapter.show(newest)
    assert info.readonly and info.received_uuid
    # the source's key cannot write or delete anything, even with a full ssh command line
    ssh = ["ssh", "-p", str(server.port), "-i", str(server.client_key), *sum((["-o", o] for o in server.ssh_options()), []), "--", "root@127.0.0.1"]
    for cmd in (f"btrfs subvolume delete {homelab.paths['home']}", f"btrfs receive {homelab.paths['home']}", "rm -rf /"):
        proc = subprocess.run([*ssh, cmd], capture_output=True, text=True)
        assert proc.returncode != 0 and "refused" in proc.stderr


def _record(path) -> dict:
    return json.loads((path / ".snapshots" / "subvault-pulled-pi.json").read_text())


def test_invariant_1_pull_source_keeps_the_pullers_base(homelab, make_fs, make_sshd, tmp_path):
    """The puller records its base on the source; the source's own prune keeps it, and the next pull is incremental."""
    homelab.cli("snapshot")
    server = make_sshd(serve_command(homelab.fs.mountpoint, "--send-only", "--puller", "pi"))
    pi = make_fs("pi")
    puller = _puller_config(tmp_path, server, pi, homelab, ["home"])
    from conftest import run_cli

    first = json.loads(run_cli("--config", str(puller), "pull", "--json").stdout)["result"]
    assert not first["warnings"], first
    home = homelab.paths["home"]
    base = _record(home)["uuid"]
    (base_snap,) = [p for p in (home / ".snapshots").iterdir() if p.name.isdigit()]
    assert adapter.show(base_snap / "snapshot").uuid == base
    # the source moves on and prunes hard: only its newest timeline snapshot is due to stay
    for _ in range(2):
        (home / "more.txt").write_text(str(_))
        homelab.cli("snapshot", "--force")
    homelab.config.write_text(homelab.config.read_text().replace('timeline = "24h 7d 4w"', 'timeline = "1h"'))
    pruned = homelab.cli("prune", "--json")
    assert pruned.returncode == 0, pruned.stderr
    assert (base_snap / "snapshot").exists(), "the puller's base survives the source's prune"
    assert "pulled by pi" in pruned.stdout
    second = json.loads(run_cli("--config", str(puller), "pull", "--json").stdout)["result"]["items"]
    pulls = [i for i in second if i["action"] == "pulled"]
    assert pulls and not any(i["data"]["full"] for i in pulls), "zero forced full sends"
    assert _record(home)["uuid"] != base, "the record moves to the new base"


def test_a_source_key_without_puller_warns_that_the_base_is_not_held(homelab, make_fs, make_sshd, tmp_path):
    homelab.cli("snapshot")
    server = make_sshd(serve_command(homelab.fs.mountpoint, "--send-only"))
    pi = make_fs("pi")
    puller = _puller_config(tmp_path, server, pi, homelab, ["home"], puller=None)
    from conftest import run_cli

    res = run_cli("--config", str(puller), "pull", "--json")
    out = json.loads(res.stdout)["result"]
    assert [i for i in out["items"] if i["action"] == "pulled"], out
    assert any("--puller" in w for w in out["warnings"]), out


def test_check_warns_about_a_puller_that_stopped_pulling(homelab):
    from datetime import timedelta

    from subvault import pullholds
    from subvault.timeutil import utcnow

    homelab.cli("snapshot")
    (snap,) = [p for p in (homelab.paths["home"] / ".snapshots").iterdir() if p.name.isdigit()]
    pullholds.write_record(homelab.paths["home"], "pi", adapter.show(snap / "snapshot").uuid, utcnow() - timedelta(days=9))
    res = homelab.cli("check")
    assert "puller pi last pulled 9d" in res.stdout + res.stderr, res.stdout + res.stderr


def test_invariant_7_a_renamed_source_subvolume_is_found_by_uuid_not_pulled_full_again(homelab, make_fs, make_sshd, tmp_path):
    """Renaming a [[source.subvolume]] keeps its path: its pulls under the old name are found by uuid, none repeated in full."""
    homelab.cli("snapshot")
    server = make_sshd(serve_command(homelab.fs.mountpoint, "--send-only", "--puller", "pi"))
    pi = make_fs("pi")
    puller = _puller_config(tmp_path, server, pi, homelab, ["home", "var_lib_pvc"])
    from conftest import run_cli

    run_cli("--config", str(puller), "pull")
    old = pi.mountpoint / "vps1" / "home"
    before = sorted(p.name for p in old.iterdir())
    assert len(before) == 1
    puller.write_text(puller.read_text().replace('name = "home"', 'name = "homedir"'))
    (homelab.paths["home"] / "more.txt").write_text("later\n")
    homelab.cli("snapshot", "--force")
    res = run_cli("--config", str(puller), "pull", "--json", check=False)
    doc = json.loads(res.stdout)
    assert doc["exit_code"] == 3 and res.returncode == 3, res.stdout
    items = doc["result"]["items"]
    assert not [i for i in items if i["action"] == "pulled" and i["subject"] == "vps1:homedir"], items
    [error] = doc["result"]["errors"]
    assert error.startswith("vps1:homedir: ") and str(old) in error and 'name = "home"' in error, error
    assert sorted(p.name for p in old.iterdir()) == before, "the old directory is untouched"
    assert not (pi.mountpoint / "vps1" / "homedir").exists()
