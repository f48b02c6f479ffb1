"""Prometheus metrics for the node_exporter textfile collector.

Rules:
- One file per command, and no series in both: `run` writes the layer series and
  `subvault_last_run_timestamp_seconds`, `check` writes the problem counts and
  `subvault_last_check_timestamp_seconds` (the collector refuses a series from two files).
- `last_success` is when a job completed that layer for that subvolume (the job's
  clock, not the snapshot's date); a layer that failed this time keeps its old value.
- The file is written atomically: a hidden temp file in the same directory (the
  collector reads only `*.prom`), fsync, then rename over the target.
- Labels are `subvolume` and `layer` (`local`, `replica:<target>`, `offsite:<target>`).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

from subvault.errors import SubvaultError

# prometheus_client is imported in the functions that use it, and nowhere else: it loads an
# HTTP server and ssl (about 50 ms), and a `run` without --metrics-file never needs it.
if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

LABELS = ("subvolume", "layer")


class MetricsWriteFailed(SubvaultError):
    """The metrics file could not be written."""


@dataclass(frozen=True)
class LayerStatus:
    """What one layer holds for one subvolume, as the metrics report it.

    last_success: when the layer last completed for this subvolume (None: never).
    newest_age_s: age in seconds of the newest copy in this layer (None: no copy).
    bytes_sent: bytes the last run sent for it (0 for the local layer).
    count: how many snapshots/copies the layer holds.
    """

    subvolume: str
    layer: str
    last_success: datetime | None
    newest_age_s: float | None
    bytes_sent: int
    count: int


def build_registry(
    layers: Sequence[LayerStatus] = (),
    problems: Mapping[str, int] | None = None,
    *,
    generated_at: datetime | None = None,
    command: str = "run",
) -> CollectorRegistry:
    """Given layer statuses and problem counts by kind, return a filled registry.

    problems=None leaves the problem gauges out (for `run`); {} reports zero problems.
    generated_at sets subvault_last_<command>_timestamp_seconds.
    """
    from prometheus_client import CollectorRegistry, Gauge

    registry = CollectorRegistry()
    if layers:
        _layer_gauges(registry, layers)
    if problems is not None:
        total = Gauge("subvault_check_problems", "Problems the last subvault check found", registry=registry)
        total.set(sum(problems.values()))
        by_kind = Gauge("subvault_check_problems_by_kind", "Problems the last check found, by kind", ["kind"], registry=registry)
        for kind, n in sorted(problems.items()):
            by_kind.labels(kind=kind).set(n)
    if generated_at is not None:
        stamp = Gauge(f"subvault_last_{command}_timestamp_seconds", f"When subvault {command} last wrote this file", registry=registry)
        stamp.set(generated_at.timestamp())
    return registry


def _layer_gauges(registry: CollectorRegistry, layers: Sequence[LayerStatus]) -> None:
    from prometheus_client import Gauge

    last = Gauge("subvault_last_success_timestamp_seconds", "Last successful completion per subvolume and layer", LABELS, registry=registry)
    age = Gauge("subvault_newest_copy_age_seconds", "Age of the newest copy per subvolume and layer", LABELS, registry=registry)
    sent = Gauge("subvault_sent_bytes", "Bytes sent by the last run per subvolume and layer", LABELS, registry=registry)
    count = Gauge("subvault_snapshots", "Snapshots or copies held per subvolume and layer", LABELS, registry=registry)
    for status in layers:
        labels = {"subvolume": status.subvolume, "layer": status.layer}
        if status.last_success is not None:
            last.labels(**labels).set(status.last_success.timestamp())
        if status.newest_age_s is not None:
            age.labels(**labels).set(status.newest_age_s)
        sent.labels(**labels).set(status.bytes_sent)
        count.labels(**labels).set(status.count)


def render(registry: CollectorRegistry) -> str:
    """Return the registry in the Prometheus text exposition format."""
    from prometheus_client import generate_latest

    return generate_latest(registry).decode()


def write_textfile(path: Path, registry: CollectorRegistry) -> None:
    """Write the registry to path atomically (temp file, fsync, rename), mode 0644.

    Raise MetricsWriteFailed if the directory is missing or not writable.
    """
    path = Path(path)
    try:
        _write_atomically(path, render(registry))
    except OSError as exc:
        raise MetricsWriteFailed(
            f"cannot write metrics file {path}: {exc.strerror or exc}; check --metrics-file and its directory"
        ) from None


def _write_atomically(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def previous_successes(path: Path) -> dict[tuple[str, str], float]:
    """Return {(subvolume, layer): last success timestamp} from an earlier file at path ({} if none or unreadable)."""
    from prometheus_client.parser import text_string_to_metric_families

    try:
        text = Path(path).read_text()
    except OSError:
        return {}
    out: dict[tuple[str, str], float] = {}
    try:
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name == "subvault_last_success_timestamp_seconds":
                    out[(sample.labels.get("subvolume", ""), sample.labels.get("layer", ""))] = sample.value
    except ValueError:
        return {}
    return out
