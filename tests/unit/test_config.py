"""The config schema: the brief's example loads as written; errors name file, key, expectation."""

from __future__ import annotations

import tomllib

import pytest

from subvault.config.load import load_config, parse_config
from subvault.config.sample import render_sample, schema_keys
from subvault.errors import ConfigError

BRIEF_EXAMPLE = '''
[defaults]
timeline = "24h 7d 4w"     # local retention; cadence = finest unit (here hourly)
prechange_keep = 10        # pre-change snapshots kept per subvolume
targets = ["pi"]           # where every subvolume goes unless it says otherwise

[[subvolume]]
name = "root"
path = "/"

[[subvolume]]
name = "var_lib_pvc"
path = "/var/lib/pvc"
targets = ["pi", "offsite"]

[[exclude]]
path = "/var/cache"
reason = "ephemeral"

[[target]]
name = "pi"
type = "btrfs"
url = "ssh://root@pi.wg:22/mnt/backup"   # or a local path: "/mnt/usb/backup"
keep = "24h 8d 5w"

[[target]]
name = "offsite"
type = "object"
url = "s3://homelab-backup/vps1"          # or "file:///mnt/nas/offsite"
endpoint = "https://s3.eu-central-003.backblazeb2.com"
credentials = "/etc/subvault/offsite.env" # AWS_ACCESS_KEY_ID=… / AWS_SECRET_ACCESS_KEY=…
recipients = ["age1…"]                    # public keys only; the identity stays offline
keep = "8d 5w 12m"
full_every = "30d"

[notify]
urls = ["tgram://BOT_TOKEN/CHAT_ID"]      # Apprise URLs
ping = "https://hc-ping.com/…"            # optional dead-man switch

[flux]
kubeconfig = "/var/lib/microshift/resources/kubeadmin/kubeconfig"
'''


def test_brief_example_loads_as_written():
    cfg = parse_config(BRIEF_EXAMPLE)
    assert [s.name for s in cfg.subvolume] == ["root", "var_lib_pvc"]
    assert cfg.targets_of(cfg.subvolume[0]) == ["pi"]
    assert cfg.targets_of(cfg.subvolume[1]) == ["pi", "offsite"]
    assert cfg.get_target("offsite").full_every == "30d"
    assert cfg.timeline_of(cfg.subvolume[0]) == "24h 7d 4w"
    assert cfg.flux is not None


def _error(text: str) -> str:
    with pytest.raises(ConfigError) as info:
        parse_config(text)
    return str(info.value)


def test_bad_retention_names_file_target_and_key():
    bad = BRIEF_EXAMPLE.replace('keep = "24h 8d 5w"', 'keep = "24x"')
    assert _error(bad) == 'subvault.toml: target "pi": keep: "24x" is not a retention (expected e.g. "24h 8d 5w")'


def test_unknown_key_is_an_error():
    bad = BRIEF_EXAMPLE.replace("prechange_keep = 10", "prechange_keep = 10\nprechange_kep = 3")
    assert _error(bad) == 'subvault.toml: defaults: unknown key "prechange_kep" (check the spelling; see `subvault config sample`)'


def test_unknown_key_in_subvolume_names_it():
    bad = BRIEF_EXAMPLE.replace('path = "/var/lib/pvc"', 'path = "/var/lib/pvc"\ntimelin = "1d"')
    assert 'subvolume "var_lib_pvc": unknown key "timelin"' in _error(bad)


def test_malformed_toml():
    msg = _error("[defaults\ntimeline = 1")
    assert msg.startswith("subvault.toml: not valid TOML:")


def test_undefined_target_reference():
    bad = BRIEF_EXAMPLE.replace('targets = ["pi", "offsite"]', 'targets = ["pi", "nas"]')
    assert 'subvolume "var_lib_pvc": targets: "nas" is not a configured [[target]]' in _error(bad)


def test_missing_required_key():
    assert 'subvolume "x": missing required key "path"' in _error('[[subvolume]]\nname = "x"\n')
    assert 'subvolume #1: missing required key "name"' in _error('[[subvolume]]\nprechange_keep = 1\n')


def test_relative_path_rejected():
    assert 'subvolume "x": path: "var/lib" is not an absolute path' in _error('[[subvolume]]\nname = "x"\npath = "var/lib"\n')


def test_exclude_needs_reason():
    assert "exclude" in _error('[[exclude]]\npath = "/var/cache"\nreason = " "\n')


def test_exclude_names_a_path_or_a_filesystem_uuid():
    uuid = "6A41755D-382D-48B2-9451-090E75F78E8A"
    cfg = parse_config(f'[[exclude]]\nfilesystem = "{uuid}"\nsubvolume = "/root.old/"\nreason = "leftover"\n')
    assert (cfg.exclude[0].filesystem, cfg.exclude[0].subvolume, cfg.exclude[0].path) == (uuid.lower(), "root.old", None)
    assert "not both" in _error(f'[[exclude]]\npath = "/x"\nfilesystem = "{uuid}"\nreason = "r"\n')
    assert "not both" in _error('[[exclude]]\nreason = "r"\n')
    assert "not a btrfs filesystem UUID" in _error('[[exclude]]\nfilesystem = "/dev/sdb1"\nreason = "r"\n')
    assert "needs filesystem" in _error('[[exclude]]\npath = "/x"\nsubvolume = "a"\nreason = "r"\n')


def test_wrong_type():
    assert "defaults: prechange_keep:" in _error("[defaults]\nprechange_keep = \"ten\"\n")


def test_btrfs_target_url_checked():
    msg = _error('[[target]]\nname = "pi"\ntype = "btrfs"\nurl = "s3://x/y"\n')
    assert 'target "pi": url: "s3://x/y" is not a btrfs target' in msg


def test_identity_in_recipients_refused():
    msg = _error('[[target]]\nname = "o"\ntype = "object"\nurl = "file:///x"\nrecipients = ["AGE-SECRET-KEY-1ABC"]\n')
    assert "not an age public key" in msg and "AGE-SECRET-KEY-1ABC" not in msg


def test_duplicate_names():
    assert 'subvolume "a" is defined twice' in _error('[[subvolume]]\nname = "a"\npath = "/a"\n[[subvolume]]\nname = "a"\npath = "/b"\n')


def test_missing_file_says_what_to_do(tmp_path):
    with pytest.raises(ConfigError, match="subvault init"):
        load_config(tmp_path / "nope.toml")


def test_sample_parses_and_covers_every_key():
    text = render_sample()
    parse_config(text)
    for section, keys in schema_keys().items():
        for key in keys:
            assert f"{key} =" in text, f"{section}.{key} missing from the sample"
    tomllib.loads(text)


def test_upload_concurrency_defaults_to_four_and_is_bounded():
    assert parse_config(BRIEF_EXAMPLE).get_target("offsite").upload_concurrency == 4
    text = BRIEF_EXAMPLE.replace('full_every = "30d"', 'full_every = "30d"\nupload_concurrency = 0')
    assert "upload_concurrency" in _error(text)
    text = BRIEF_EXAMPLE.replace('full_every = "30d"', 'full_every = "30d"\nupload_concurrency = 8')
    assert parse_config(text).get_target("offsite").upload_concurrency == 8
    assert "upload_concurrency = 4" in render_sample()
