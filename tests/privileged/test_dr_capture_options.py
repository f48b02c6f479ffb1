"""What `dr capture` and `run` capture (issue 11, item 8): boot dirs that cannot be read are
said, at capture and in `check`; `run` does not replace a capture made by hand with a
poorer one from the config; `run --dry-run` shows the capture step.

On a real machine image (GPT, ESP through mtools, btrfs in the homelab layout).
"""

from __future__ import annotations

import json

import pytest
from conftest import run_cli

from subvault.demo.machine import Machine, machine_config


@pytest.fixture
def machine(tmp_path):
    m = Machine(tmp_path)
    try:
        yield m.build()
    finally:
        m.close()


def _config(machine, make_fs, tmp_path, dr: str):
    pi = make_fs("pi", size="2G")
    cfg = tmp_path / "subvault.toml"
    cfg.write_text(machine_config(machine, pi.mountpoint, tmp_path / "state") + dr)

    def cli(*args, check=True):
        return run_cli("--config", str(cfg), *args, check=check)

    return cli


def _manifest(machine) -> dict:
    return json.loads((machine.capture_dir / "latest" / "manifest.json").read_text())


def test_boot_dirs_that_cannot_be_read_are_said_at_capture_and_in_check(machine, make_fs, tmp_path):
    esp_mountpoint = tmp_path / "efi"  # fstab mounts the ESP here, but nothing is mounted: an empty directory
    esp_mountpoint.mkdir()
    fstab = tmp_path / "fstab"
    fstab.write_text(machine.fstab.read_text() + f"UUID={machine.esp_uuid} {esp_mountpoint} vfat umask=0077 0 2\n")
    missing = tmp_path / "no-such-boot"
    cli = _config(machine, make_fs, tmp_path, f"""
[dr]
capture_dir = "{machine.capture_dir}"
disks = ["{machine.image}"]
fstab = "{fstab}"
boot_dirs = ["{esp_mountpoint}", "{missing}"]
""")
    res = cli("dr", "capture", "--json")
    warnings = json.loads(res.stdout)["result"]["warnings"]
    assert any(str(missing) in w and "does not exist" in w for w in warnings), warnings
    assert any(str(esp_mountpoint) in w and "nothing is mounted" in w for w in warnings), warnings
    assert _manifest(machine)["boot_dirs"] == []  # not an empty btrfs directory passed off as the ESP
    check = json.loads(cli("check", "--json", check=False).stdout)["result"]["warnings"]
    assert any(str(missing) in w for w in check) and any(str(esp_mountpoint) in w for w in check), check


def test_run_keeps_the_options_of_a_capture_made_by_hand(machine, make_fs, tmp_path):
    """`dr capture --boot-dir /boot/efi=DEV` by hand; `run` must not replace it with a capture without the ESP."""
    cli = _config(machine, make_fs, tmp_path, f"""
[dr]
capture_dir = "{machine.capture_dir}"
disks = ["{machine.image}"]
fstab = "{machine.fstab}"
boot_dirs = ["/boot/efi"]
""")
    cli("dr", "capture", "--boot-dir", f"/boot/efi={machine.esp}", "--firmware", "uefi")
    by_hand = _manifest(machine)
    assert [b["path"] for b in by_hand["boot_dirs"]] == ["/boot/efi"]
    # This run makes the .snapshots containers first, so the layout changed: it captures again, with the options made by hand.
    ran = [i for i in json.loads(cli("run", "--json").stdout)["result"]["items"] if i["subject"] == "dr"]
    assert [i["action"] for i in ran] == ["captured"] and "made by hand" in ran[0]["detail"], ran
    after = _manifest(machine)
    assert after["firmware"] == "uefi" and [b["path"] for b in after["boot_dirs"]] == ["/boot/efi"]  # still with the ESP
    dry = json.loads(cli("run", "--dry-run", "--json").stdout)["result"]["items"]
    assert [i["action"] for i in dry if i["subject"] == "dr"] == ["unchanged"], dry
    # Once [dr] itself changes, the config's options apply again.
    cfg = tmp_path / "subvault.toml"
    cfg.write_text(cfg.read_text().replace('boot_dirs = ["/boot/efi"]', f'boot_dirs = ["/boot/efi={machine.esp}"]'))
    dry = json.loads(cli("run", "--dry-run", "--json").stdout)["result"]["items"]
    assert [i["action"] for i in dry if i["subject"] == "dr"] == ["would-capture"], dry
