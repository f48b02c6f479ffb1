"""Invariant 12: local state is a cache; deleting it loses nothing."""

from __future__ import annotations

import json
import shutil


def test_invariant_12_state_dir_is_a_cache(homelab, make_fs):
    pi = make_fs("pi")
    (pi.mountpoint / "backup").mkdir()
    homelab.config.write_text(
        homelab.config.read_text().replace("prechange_keep = 10", 'prechange_keep = 10\ntargets = ["pi"]')
        + f'\n[[target]]\nname = "pi"\ntype = "btrfs"\nurl = "{pi.mountpoint}/backup"\nkeep = "24h 8d 5w"\n'
    )
    homelab.cli("run")
    before = json.loads(homelab.cli("list", "--json").stdout)["result"]
    assert homelab.state.exists()
    shutil.rmtree(homelab.state)
    after = json.loads(homelab.cli("list", "--json").stdout)["result"]
    assert after == before  # snapshots and which targets hold them come from the filesystems
    assert all(s["uuid"] in l["held_by"] for l in after for s in l["snapshots"])
    again = json.loads(homelab.cli("run", "--json").stdout)["result"]["items"]
    assert not [i for i in again if i["action"] in ("created", "sent", "deleted")], "nothing is redone or lost"
    assert homelab.cli("check").returncode == 0
