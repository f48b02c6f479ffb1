"""`config check` catches at load what used to fail only at run time, or never (issue 12, item 8).

Every error in the file is reported at once, one line each, naming the file, the key
and what was expected.
"""

from __future__ import annotations

import os

import pytest

from subvault.config.load import load_config, parse_config, validate
from subvault.config.verify import deep_errors
from subvault.errors import ConfigError

PI = '[[target]]\nname = "{name}"\ntype = "btrfs"\nurl = "{url}"\n'
OBJ = '[[target]]\nname = "{name}"\ntype = "object"\nurl = "{url}"\nrecipients = {recipients}\n{extra}'
# a real X25519 recipient (age-keygen), and the same with its last character changed
RECIPIENT = "age1ql3z7hjy54pw3hyww5ayyfg7zqgvc7w3j2elw8zmrj2kg5sfn9aqmcac8p"
BAD_CHECKSUM = RECIPIENT[:-1] + "q"


def _lines(text: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_config(text)
    return str(info.value).splitlines()


def _target(name: str, url: str) -> str:
    return PI.format(name=name, url=url)


def _object(name: str, url: str = "file:///srv/offsite", recipients: str = f'["{RECIPIENT}"]', extra: str = "") -> str:
    return OBJ.format(name=name, url=url, recipients=recipients, extra=extra)


@pytest.mark.parametrize(
    "a, b",
    [
        ("/mnt/backup", "/mnt/backup/"),
        ("/mnt/backup", "/mnt//backup/."),
        ("ssh://root@pi.wg:22/mnt/backup", "ssh://pi.wg/mnt/backup/"),
        ("ssh://root@PI.wg/mnt/backup", "ssh://backup@pi.wg:22/mnt/backup"),
    ],
)
def test_two_targets_on_the_same_storage_are_refused(a, b):
    lines = _lines(_target("usb", a) + _target("usb2", b))
    assert len(lines) == 1, lines
    assert lines[0].startswith('subvault.toml: target "usb2": url: ')
    assert 'same storage as target "usb"' in lines[0] and "prune each other" in lines[0]


def test_two_object_targets_on_the_same_prefix_are_refused():
    lines = _lines(_object("o1", "s3://bucket/vps1") + _object("o2", "s3://bucket/vps1/"))
    assert any('target "o2": url:' in line and 'same storage as target "o1"' in line for line in lines), lines


@pytest.mark.parametrize(
    "a, b",
    [
        ("/mnt/backup", "/mnt/backup2"),
        ("ssh://pi.wg/mnt/backup", "ssh://pi.wg:2222/mnt/backup"),
        ("ssh://pi.wg/mnt/backup", "ssh://nas.wg/mnt/backup"),
    ],
)
def test_targets_on_different_storage_load(a, b):
    parse_config(_target("one", a) + _target("two", b))


def test_duplicate_name_in_targets_lists():
    text = '[defaults]\ntargets = ["pi", "pi"]\n' + _target("pi", "/mnt/pi")
    text += '[[subvolume]]\nname = "root"\npath = "/"\ntargets = ["pi", "pi"]\n'
    lines = _lines(text)
    assert 'subvault.toml: defaults: targets: "pi" is listed twice (expected each target once)' in lines
    assert 'subvault.toml: subvolume "root": targets: "pi" is listed twice (expected each target once)' in lines


def test_a_target_named_local_is_refused():
    (line,) = _lines(_target("local", "/mnt/backup"))
    assert line.startswith('subvault.toml: target "local": name: "local" is reserved')


def test_full_every_zero_is_refused():
    (line,) = _lines(_object("offsite", extra='full_every = "0d"\n'))
    assert line.startswith('subvault.toml: target "offsite": full_every: "0d"')
    assert "longer than zero" in line


def test_empty_recipients_is_refused():
    (line,) = _lines(_object("offsite", recipients="[]"))
    assert line.startswith('subvault.toml: target "offsite": recipients:')
    assert "age1" in line


@pytest.mark.parametrize("url", ["ssh://-oProxyCommand=touch%20pwned/mnt/backup", "ssh://root@-oProxyCommand=x/mnt"])
def test_ssh_host_starting_with_dash_is_refused(url):
    (line,) = _lines(_target("pi", url))
    assert line.startswith('subvault.toml: target "pi": url:') and "must not start with" in line


def test_source_host_starting_with_dash_is_refused():
    text = '[[source]]\nname = "vps"\nurl = "ssh://-oProxyCommand=x/"\ndest = "/mnt/pulled"\n'
    (line,) = _lines(text)
    assert line.startswith('subvault.toml: source "vps": url:') and "must not start with" in line


def test_every_error_in_the_file_is_reported_at_once():
    text = (
        '[defaults]\ntimeline = "24x"\ntargets = ["pi", "pi"]\n'
        + _target("pi", "/mnt/backup")
        + _target("pi2", "/mnt/backup/")
        + _target("local", "/mnt/other")
        + _object("offsite", recipients="[]", extra='full_every = "0d"\nkeep = "8x"\n')
        + '[[subvolume]]\nname = "root"\npath = "relative"\n'
        + '[[subvolume]]\nname = "home"\npath = "/home"\ntargets = ["nas"]\n'
    )
    lines = _lines(text)
    want = [
        "defaults: timeline:",
        'defaults: targets: "pi" is listed twice',
        'target "pi2": url:',
        'target "local": name:',
        'target "offsite": keep:',
        'target "offsite": full_every:',
        'target "offsite": recipients:',
        'subvolume "root": path:',
        'subvolume "home": targets: "nas" is not a configured [[target]]',
    ]
    for w in want:
        assert any(line.startswith(f"subvault.toml: {w}") for line in lines), (w, lines)
    assert len(lines) == len(want), lines


def test_a_broken_target_is_not_also_reported_as_unknown():
    text = '[defaults]\ntargets = ["pi"]\n' + _target("pi", "/mnt/backup") + 'keep = "24x"\n'
    (line,) = _lines(text)
    assert 'target "pi": keep:' in line


def test_errors_name_the_real_path_of_the_file(tmp_path):
    real = tmp_path / "etc" / "mine.toml"
    real.parent.mkdir()
    real.write_text(_target("local", "/mnt/backup"))
    link = tmp_path / "link.toml"
    link.symlink_to(real)
    with pytest.raises(ConfigError) as info:
        load_config(link)
    assert str(info.value).startswith(f'{os.path.realpath(real)}: target "local": name:')


def test_loading_verifies_each_recipient_and_the_deep_check_the_placeholder():
    lines = _lines(_object("offsite", recipients=f'["{RECIPIENT}", "{BAD_CHECKSUM}", "age1…"]'))
    assert len(lines) == 1 and lines[0].startswith('subvault.toml: target "offsite": recipients[1]:'), lines
    assert "not an age public key" in lines[0]
    errors = _deep(_object("offsite", recipients=f'["{RECIPIENT}", "age1…"]'))
    assert len(errors) == 1 and errors[0].startswith('target "offsite": recipients[1]: "age1…" is the example'), errors
    assert _deep(_object("offsite")) == []


def test_deep_check_accepts_plugin_recipients():
    # age plugin recipients are bech32 with the "age1<plugin>" prefix, e.g. age-plugin-yubikey
    plugin = "age1yubikey1qwt50d05nh5vutpdzmlg5wn80xq5negm4uj9ghv0snvdd3yysf5yw3rhl3t"
    assert _deep(_object("offsite", recipients=f'["{plugin}"]')) == []


def _deep(text: str) -> list[str]:
    checked = validate(text)
    assert checked.errors == []
    return deep_errors(checked.config, checked.data)
