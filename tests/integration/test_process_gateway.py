"""The subprocess gateway: pipelines checked stage by stage, stalls by progress, secrets masked."""

from __future__ import annotations

import subprocess
import sys

import pytest

from subvault import process
from subvault.errors import CommandFailed, NoSpace, StalledTransfer
from subvault.secrets import mask

PY = sys.executable


def test_pipeline_moves_bytes_and_counts_them(tmp_path):
    out = tmp_path / "out"
    with open(out, "wb") as fh, process.pipeline([["head", "-c", "3000000", "/dev/zero"], ["cat"]], stdout=fh) as pipe:
        result = pipe.run(meter_after=0)
    assert result.bytes == 3_000_000 and out.stat().st_size == 3_000_000


def test_invariant_9_failed_stage_stops_the_others_and_is_named():
    # the consumer fails; the endless producer must be stopped, and the error names the consumer
    stages = [["yes"], [PY, "-c", "import sys; sys.stdin.read(10); sys.stderr.write('receiver broke\\n'); sys.exit(3)"]]
    with pytest.raises(CommandFailed) as info:
        with process.pipeline(stages, what="test transfer", stdout=subprocess.DEVNULL) as pipe:
            pipe.run(meter_after=0)
    assert "receiver broke" in str(info.value)
    assert info.value.returncode == 3


def test_invariant_9_failing_producer_is_reported_not_success():
    stages = [[PY, "-c", "import sys; sys.stdout.write('x'*10); sys.stderr.write('send failed\\n'); sys.exit(1)"], ["cat"]]
    with pytest.raises(CommandFailed, match="send failed"):
        with process.pipeline(stages, stdout=subprocess.DEVNULL) as pipe:
            pipe.run(meter_after=None)


def test_stall_is_detected_by_progress_not_wall_clock():
    stages = [[PY, "-c", "import time, sys; sys.stdout.write('x'); sys.stdout.flush(); time.sleep(60)"], ["cat"]]
    with pytest.raises(StalledTransfer, match="no data for 1s"):
        with process.pipeline(stages, what="slow", stdout=subprocess.DEVNULL) as pipe:
            pipe.run(meter_after=0, stall_seconds=1)


def test_enospc_is_typed():
    with pytest.raises(NoSpace):
        process.run([PY, "-c", "import sys; sys.stderr.write('ERROR: No space left on device\\n'); sys.exit(1)"])


def test_invariant_11_registered_secrets_are_masked():
    mask("s3cr3t-token-value")
    with pytest.raises(CommandFailed) as info:
        process.run([PY, "-c", "import sys; sys.stderr.write('bad token s3cr3t-token-value\\n'); sys.exit(2)"])
    assert "s3cr3t-token-value" not in str(info.value) and "***" in str(info.value)
    assert all("s3cr3t" not in a for a in info.value.argv)


def test_capture_returns_last_stage_output():
    with process.pipeline([["printf", "a\\nb\\n"], ["sort", "-r"]]) as pipe:
        assert pipe.capture() == "b\na\n"


def test_after_an_ssh_stage_the_next_stage_reads_are_counted(tmp_path, monkeypatch):
    """A ControlMaster client hands its pipes to the master, so its own writes say nothing: count the reader."""
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "ssh").write_text("#!/bin/sh\nexec head -c 3000000 /dev/zero\n")
    (fake / "ssh").chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake}:{__import__('os').environ['PATH']}")
    out = tmp_path / "out"
    with open(out, "wb") as fh, process.pipeline([["ssh", "host", "btrfs send"], ["cat"]], stdout=fh) as pipe:
        result = pipe.run(meter_after=0)
    assert out.stat().st_size == 3_000_000
    assert 3_000_000 <= result.bytes < 3_100_000, "the reader's count: the stream plus its own few library reads"


def test_command_failed_names_the_cause_not_a_tools_trailer() -> None:
    from subvault.errors import CommandFailed

    stderr = 'age: error: unknown recipient type: "badrecipient"\nage: report unexpected or unhelpful errors at https://filippo.io/age/report\n'
    assert str(CommandFailed(["age"], 1, stderr, "age")) == 'age failed: age: error: unknown recipient type: "badrecipient"'


def test_every_message_is_bounded() -> None:
    from subvault.errors import MAX_MESSAGE, CommandFailed, Refused

    huge = "x" * 150_000
    assert len(str(Refused(huge))) < MAX_MESSAGE + 50 and "more characters" in str(Refused(huge))
    assert len(str(CommandFailed(["tool"], 1, huge, "tool"))) < 400


def test_a_report_of_many_lines_keeps_every_line() -> None:
    # `config check` reports every error at once: bounding the whole text cut errors off.
    from subvault.errors import ConfigError

    lines = [f"/etc/subvault/subvault.toml: target[{i}]: url: {'x' * 80} (expected a path)" for i in range(15)]
    assert str(ConfigError("\n".join(lines))).split("\n") == lines


@pytest.fixture
def no_io_accounting(monkeypatch):
    """A kernel without per-process I/O counts: the metered stream is spliced through us."""
    from subvault.process import meter

    monkeypatch.setattr(meter, "_IO_ACCOUNTING", False)


def test_spliced_stream_reaches_the_rest_of_the_pipeline_whole_and_counted(tmp_path, no_io_accounting):
    out = tmp_path / "out"
    stages = [["head", "-c", "3000000", "/dev/zero"], ["cat"], ["cat"]]
    seen: list[int] = []
    with open(out, "wb") as fh, process.pipeline(stages, stdout=fh) as pipe:
        result = pipe.run(meter_after=0, progress=seen.append)
    assert result.bytes == 3_000_000 and out.stat().st_size == 3_000_000 and seen[-1] == 3_000_000


def test_a_last_ssh_stage_is_counted_by_splicing_into_the_callers_file(tmp_path, monkeypatch):
    """An ssh client's own writes say nothing (ControlMaster), and no stage reads after it: splice and count."""
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "ssh").write_text("#!/bin/sh\nexec head -c 3000000 /dev/zero\n")
    (fake / "ssh").chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake}:{__import__('os').environ['PATH']}")
    out = tmp_path / "out"
    with open(out, "wb") as fh, process.pipeline([["ssh", "host", "btrfs send"]], stdout=fh) as pipe:
        result = pipe.run(meter_after=0)
    assert result.bytes == 3_000_000 and out.stat().st_size == 3_000_000


def test_invariant_9_spliced_stream_names_the_consumer_that_failed(no_io_accounting):
    stages = [["yes"], [PY, "-c", "import sys; sys.stdin.read(10); sys.stderr.write('receiver broke\\n'); sys.exit(3)"]]
    with pytest.raises(CommandFailed) as info:
        with process.pipeline(stages, what="test transfer", stdout=subprocess.DEVNULL) as pipe:
            pipe.run(meter_after=0)
    assert "receiver broke" in str(info.value) and info.value.returncode == 3


def test_spliced_stream_stall_is_detected_by_progress(no_io_accounting):
    stages = [[PY, "-c", "import time, sys; sys.stdout.write('x'); sys.stdout.flush(); time.sleep(60)"], ["cat"]]
    with pytest.raises(StalledTransfer, match="no data for 1s"):
        with process.pipeline(stages, what="slow", stdout=subprocess.DEVNULL) as pipe:
            pipe.run(meter_after=0, stall_seconds=1)
