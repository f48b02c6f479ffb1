"""docs/offsite-recipe.md, followed literally with age, zstd and coreutils (invariant 10).

The only change to the recipe's commands: `btrfs receive "$DEST"` becomes an append to
a file, since these tests have no btrfs (the privileged tier runs the real one).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from offsite_fixtures import mac_key, make_age_key, make_stream, request

from subvault.offsite import layout
from subvault.offsite.upload import upload
from subvault.stores import open_store

pytestmark = pytest.mark.integration
RECIPE = Path(__file__).parents[2] / "docs" / "offsite-recipe.md"
RECEIVE = 'btrfs receive "$DEST"'
PART = 200 << 10


def recipe_block(name: str) -> str:
    """Return the shell block that follows `<!-- recipe:NAME -->` in the recipe."""
    match = re.search(rf"<!-- recipe:{name} -->\s*```sh\n(.*?)```", RECIPE.read_text(), re.S)
    assert match, f"recipe block {name} not found"
    return match.group(1)


def run_block(name: str, env: dict[str, str], *, trace: Path | None = None) -> subprocess.CompletedProcess:
    """Run a recipe block with bash; with trace, strace records every command line it starts (execve) there."""
    script = recipe_block(name)
    if name == "restore":
        assert RECEIVE in script
        script = script.replace(RECEIVE, 'cat >> "$DEST/stream.bin"')
    tracer = ["strace", "-f", "-qq", "-e", "trace=execve", "-s", "100000", "-o", str(trace)] if trace else []
    return subprocess.run([*tracer, "bash", "-c", script], env={**os.environ, **env}, capture_output=True, text=True)


@pytest.fixture
def bucket(tmp_path: Path):
    age = make_age_key(tmp_path / "identity.txt")
    (tmp_path / "bucket").mkdir()
    store = open_store(f"file://{tmp_path}/bucket")
    key = mac_key(tmp_path)
    full = make_stream(tmp_path / "full.bin", 5 * PART + 7, seed=21)
    inc1 = make_stream(tmp_path / "inc1.bin", PART + 3, seed=22)
    inc2 = make_stream(tmp_path / "inc2.bin", 2 * PART, seed=23)
    chain: tuple[str, ...] = ()
    for n, (uuid, src) in enumerate([("9f0c-full", full), ("9f0c-inc1", inc1), ("9f0c-inc2", inc2)]):
        parent = chain[-1] if chain else None
        chain = chain + (uuid,)
        upload(store, request("var_lib_pvc", uuid, parent, chain, src, (age.recipient,), hours=n), key,
               part_size=PART)
    dest = tmp_path / "dest"
    dest.mkdir()
    env = {
        "BUCKET_DIR": str(tmp_path / "bucket"), "OFFSITE": str(tmp_path / "offsite"), "SUBVOL": "var_lib_pvc",
        "UUID": "9f0c-inc2", "IDENTITY": str(age.identity), "DEST": str(dest), "MAC_KEY": str(tmp_path / "offsite.mac"),
    }
    expected = full.read_bytes() + inc1.read_bytes() + inc2.read_bytes()
    return env, expected


@pytest.mark.skipif(not shutil.which("jq"), reason="jq for the optional MAC check")
def test_recipe_checks_the_mac(bucket) -> None:
    env, _ = bucket
    assert run_block("fetch-file", env).returncode == 0
    ok = run_block("check-mac", env)
    assert ok.returncode == 0 and "manifest authentic" in ok.stdout
    manifest = Path(env["OFFSITE"]) / "var_lib_pvc" / "9f0c-inc2" / "manifest.json"
    manifest.write_text(manifest.read_text().replace('"parent_uuid": "9f0c-inc1"', '"parent_uuid": "9f0c-full"'))
    forged = run_block("check-mac", env)
    assert forged.returncode != 0 and "FORGED" in forged.stderr


def test_recipe_restores_the_chain_byte_identical(bucket) -> None:
    env, expected = bucket
    assert run_block("fetch-file", env).returncode == 0
    done = run_block("restore", env)
    assert done.returncode == 0, done.stderr
    assert (Path(env["DEST"]) / "stream.bin").read_bytes() == expected


def test_recipe_stops_on_a_corrupt_part(bucket) -> None:
    env, _ = bucket
    assert run_block("fetch-file", env).returncode == 0
    part = Path(env["OFFSITE"]) / layout.part_key("var_lib_pvc", "9f0c-inc1", 0)
    data = bytearray(part.read_bytes())
    data[100] ^= 1
    part.write_bytes(bytes(data))
    done = run_block("restore", env)
    assert done.returncode != 0 and "FAILED" in done.stdout + done.stderr
    assert not (Path(env["DEST"]) / "stream.bin").exists()  # nothing received before the check


def test_invariant_11_no_recipe_puts_a_secret_on_a_command_line(bucket, tmp_path) -> None:
    """Every command line is readable by every user (/proc/PID/cmdline): the MAC key and the age identity stay off them."""
    env, _ = bucket
    secrets = [Path(env["MAC_KEY"]).read_text().strip()]
    secrets += [line for line in Path(env["IDENTITY"]).read_text().splitlines() if line.startswith("AGE-SECRET-KEY-")]
    assert len(secrets) == 2
    for name in ("fetch-file", "check-mac", "restore"):
        trace = tmp_path / f"{name}.strace"
        done = run_block(name, env, trace=trace)
        assert done.returncode == 0, (name, done.stderr)
        lines = trace.read_text().splitlines()
        assert any("execve(" in line for line in lines), "strace recorded nothing"
        for secret in secrets:
            for case in (secret, secret.lower(), secret.upper()):
                assert not any(case in line for line in lines), f"recipe:{name} puts a secret on a command line"
