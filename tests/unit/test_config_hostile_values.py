"""Values a careless or hostile config holds: each is refused at load, one line naming its key.

Found by a break-it pass: these loaded "ok" and then crashed a later command, silently
widened an exclude, or made two pulls share one replica directory.
"""

from __future__ import annotations

import pytest

from subvault.config.load import parse_config
from subvault.errors import ConfigError

UUID = "0f5b7c1e-3a2d-4c5b-9e8f-1a2b3c4d5e6f"
OBJ = 'type = "object"\nrecipients = ["age1qyqszqgpqyqszqgpqyqszqgpqyqszqgpqyqszqgpqyqszqgpqyqs3290gq"]\n'


def _error(text: str) -> str:
    with pytest.raises(ConfigError) as info:
        parse_config(text, name="c.toml")
    return str(info.value)


@pytest.mark.parametrize(("text", "want"), [
    # two sources, or two subvolumes of one, would share a replica directory and prune each other
    ('[[source]]\nname = "v"\nurl = "ssh://v/"\ndest = "/b"\n[[source]]\nname = "v"\nurl = "ssh://w/"\ndest = "/b"\n', 'source "v" is defined twice'),
    ('[[source]]\nname = "v"\nurl = "ssh://v/"\ndest = "/b"\nsubvolume = [{name = "x", path = "/x"}, {name = "x", path = "/y"}]\n',
     'source "v": subvolume "x" is defined twice'),
    # an exclude that would silently cover a whole filesystem or a parent directory
    *[(f'[[exclude]]\nfilesystem = "{UUID}"\nsubvolume = "{sv}"\nreason = "scratch"\n', "subvolume: must name one subvolume")
      for sv in ("", "/", "  ", "@/..", "../..", "<FS_TREE>")],
    ('[[exclude]]\npath = "/var/cache/.."\nreason = "cache"\n', 'path: "/var/cache/.." contains ".."'),
    ('[[subvolume]]\nname = "a"\npath = "/var/lib/pvc/.."\n', 'path: "/var/lib/pvc/.." contains ".."'),
    ('[[subvolume]]\nname = "a"\npath = "/a\\u0000b"\n', "path: '/a\\x00b' contains a control character"),
    ('[defaults]\nstate_dir = "/var/lib/\\u001b[31msv"\n', "state_dir: "),
    # floats that overflow later: inf and absurd values
    ('[flux]\nkubeconfig = "/k"\nauto_resume_seconds = inf\n', "flux: auto_resume_seconds: expected `float` <= 2592000"),
    ('[flux]\nkubeconfig = "/k"\nwait_seconds = nan\n', "flux: wait_seconds: "),
    ('[defaults]\nprechange_lock_wait = inf\n', "defaults: prechange_lock_wait: "),
    ('[[hook]]\nwhen = "pre-snapshot"\nrun = ["x"]\ntimeout = 1e400\n', "hook #1: timeout: "),
    ('[[target]]\nname = "t"\ntype = "btrfs"\nurl = "/t"\nstall_minutes = inf\n', 'target "t": stall_minutes: '),
    # durations beyond the calendar
    (f'[[target]]\nname = "o"\nurl = "s3://b/p"\n{OBJ}full_every = "99999999999d"\n', 'target "o": full_every: "99999999999d" is too long'),
    ('[check]\nslack = "99999999999999999999d"\n', "check: slack: "),
    # URLs that crashed later or pointed nowhere
    (f'[[target]]\nname = "o"\nurl = "s3://[bucket/x"\n{OBJ}', 'target "o": url: "s3://[bucket/x" is not a URL'),
    (f'[[target]]\nname = "o"\nurl = "s3://"\n{OBJ}', 'target "o": url: "s3://" is not an object target'),
    (f'[[target]]\nname = "o"\nurl = "s3:///prefix"\n{OBJ}', 'target "o": url: "s3:///prefix" is not an object target'),
    (f'[[target]]\nname = "o"\nurl = "file:///srv/../etc"\n{OBJ}', 'target "o": url: "/srv/../etc" contains ".."'),
    ('[[target]]\nname = "t"\ntype = "btrfs"\nurl = "ssh://[h/x"\n', 'target "t": url: "ssh://[h/x" is not a URL'),
    ('[[target]]\nname = "t"\ntype = "btrfs"\nurl = "/mnt/../.."\n', 'target "t": url: "/mnt/../.." contains ".."'),
    # keys of the other target type were silently ignored
    ('[[target]]\nname = "t"\ntype = "btrfs"\nurl = "/t"\nrecipients = ["AGE-SECRET-KEY-1XYZ"]\n', 'target "t": recipients: applies only to object targets'),
    ('[[target]]\nname = "t"\ntype = "btrfs"\nurl = "/t"\nfull_every = "garbage"\n', 'target "t": full_every: applies only to object targets'),
    (f'[[target]]\nname = "o"\nurl = "s3://b/p"\n{OBJ}append_only = true\n', 'target "o": append_only: applies only to btrfs targets'),
    # an empty kinds list suspended nothing while the run said it had
    ('[flux]\nkubeconfig = "/k"\nkinds = []\n', "flux: kinds: expected `array` of length >= 1"),
    ('[[hook]]\nwhen = "pre-snapshot"\nrun = ["x", "  "]\n', "hook #1: run: ['x', '  '] has an empty word"),
])
def test_a_hostile_value_is_refused_at_load_naming_its_key(text: str, want: str) -> None:
    error = _error(text)
    assert want in error, error
    assert all(line.startswith("c.toml: ") for line in error.splitlines()), error


def test_a_btrfs_target_and_an_object_target_with_only_their_own_keys_still_load() -> None:
    cfg = parse_config(f'[[target]]\nname = "t"\ntype = "btrfs"\nurl = "/t"\ncompress = "zstd"\nparallel = 2\n'
                       f'[[target]]\nname = "o"\nurl = "s3://b/p"\n{OBJ}full_every = "30d"\nupload_concurrency = 8\n'
                       f'[[exclude]]\nfilesystem = "{UUID}"\nsubvolume = "@scratch"\nreason = "scratch"\n')
    assert [t.name for t in cfg.target] == ["t", "o"] and cfg.exclude[0].subvolume == "@scratch"


def test_a_type_error_in_a_table_does_not_hide_that_tables_other_problems() -> None:
    error = _error('[dr]\nboot_method = "uefi"\nboot_ports = [0, 22, 22]\nboot_timeout = 0\nboot_milestone = "(unclosed"\ncapture_dir = "rel"\n')
    for want in ("dr: boot_method: ", "dr: boot_ports: 0 ", "dr: boot_ports: 22 is listed twice", "dr: boot_timeout: ",
                 "dr: boot_milestone: ", "dr: capture_dir: "):
        assert want in error, (want, error)
    # the bad key's own rule is not reported a second time
    assert error.count("boot_method") == 1, error
