"""Parsers for what the capture records: sfdisk, blkid, findmnt and fstab output. Pure.

Rules:
- Parse by key, never by column position; unknown keys are kept or ignored, never fatal.
- Every parser raises ValueError with the offending line when the input is not what the
  tool prints, so a capture never stores something a restore cannot read.
"""

from __future__ import annotations

import json
import re
import shlex
from dataclasses import dataclass, field

GPT_BIOS_BOOT = "21686148-6449-6E6F-744E-656564454649"
GPT_ESP = "C12A7328-F81F-11D2-BA4B-00A0C93EC93B"
MBR_ESP = "EF"
NO_TABLE = "none"  # the label of a disk without a partition table: one filesystem fills it
WHOLE_DISK = 0  # the partition number of that filesystem


@dataclass(frozen=True)
class Partition:
    """One partition table entry; start and size in sectors."""

    number: int
    start: int
    size: int
    type: str
    uuid: str | None = None
    name: str | None = None
    attrs: str | None = None
    bootable: bool = False

    @property
    def end(self) -> int:
        return self.start + self.size


@dataclass(frozen=True)
class PartitionTable:
    """A disk's partition table as sfdisk reports it."""

    label: str  # gpt or dos
    id: str | None
    sector_size: int
    partitions: tuple[Partition, ...]
    first_lba: int | None = None
    last_lba: int | None = None

    @property
    def whole_disk(self) -> bool:
        """True for a disk without a partition table, whose one filesystem fills it (partition WHOLE_DISK)."""
        return self.label == NO_TABLE

    def partition(self, number: int) -> Partition:
        for p in self.partitions:
            if p.number == number:
                return p
        raise KeyError(number)

    def required_bytes(self) -> int:
        """The smallest disk that holds every partition (and GPT's backup header, 33 sectors)."""
        end = max((p.end for p in self.partitions), default=0)
        tail = 33 if self.label == "gpt" else 0
        return (end + tail) * self.sector_size


_NODE_NUMBER = re.compile(r"(\d+)$")


def _node_number(node: str, fallback: int) -> int:
    m = _NODE_NUMBER.search(node.strip())
    return int(m.group(1)) if m else fallback


def parse_sfdisk_dump(text: str) -> PartitionTable:
    """Given `sfdisk --dump DISK` output, return its PartitionTable. Raise ValueError if malformed."""
    header: dict[str, str] = {}
    parts: list[Partition] = []
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        node, sep, rest = line.partition(" : ")
        if sep:
            parts.append(_dump_partition(node, rest, len(parts) + 1))
            continue
        if "=" in line.split(",", 1)[0]:  # a partition line without a device name
            parts.append(_dump_partition("", line, len(parts) + 1))
            continue
        key, sep, value = line.partition(":")
        if not sep:
            raise ValueError(f"sfdisk dump: unexpected line {raw!r}")
        header[key.strip()] = value.strip()
    if "label" not in header:
        raise ValueError("sfdisk dump: no 'label:' line (is this `sfdisk --dump` output?)")
    return PartitionTable(
        label=header["label"],
        id=header.get("label-id"),
        sector_size=int(header.get("sector-size", "512")),
        partitions=tuple(parts),
        first_lba=int(header["first-lba"]) if "first-lba" in header else None,
        last_lba=int(header["last-lba"]) if "last-lba" in header else None,
    )


def _dump_partition(node: str, rest: str, fallback: int) -> Partition:
    fields: dict[str, str] = {}
    flags: set[str] = set()
    for token in _split_fields(rest):
        key, sep, value = token.partition("=")
        if sep:
            fields[key.strip()] = value.strip().strip('"')
        else:
            flags.add(token.strip())
    try:
        return Partition(
            number=_node_number(node, fallback),
            start=int(fields["start"]),
            size=int(fields["size"]),
            type=fields.get("type", ""),
            uuid=fields.get("uuid"),
            name=fields.get("name"),
            attrs=fields.get("attrs"),
            bootable="bootable" in flags,
        )
    except (KeyError, ValueError):
        raise ValueError(f"sfdisk dump: partition line without start/size: {node} : {rest}") from None


def _split_fields(rest: str) -> list[str]:
    """Split `a=1, b="x, y", bootable` on commas outside quotes."""
    out: list[str] = []
    buf: list[str] = []
    quoted = False
    for ch in rest:
        if ch == '"':
            quoted = not quoted
        if ch == "," and not quoted:
            out.append("".join(buf).strip())
            buf = []
        else:
            buf.append(ch)
    if "".join(buf).strip():
        out.append("".join(buf).strip())
    return out


def no_table(sector_size: int = 512) -> PartitionTable:
    """The table of a disk that has none: its filesystem starts at byte 0 and fills it."""
    return PartitionTable(label=NO_TABLE, id=None, sector_size=sector_size, partitions=())


def parse_sfdisk_json(text: str) -> PartitionTable:
    """Given `sfdisk --json DISK` output, return its PartitionTable. Raise ValueError if malformed."""
    try:
        table = json.loads(text)["partitiontable"]
    except (ValueError, KeyError, TypeError):
        raise ValueError("sfdisk json: no 'partitiontable' object (is this `sfdisk --json` output?)") from None
    parts = []
    for i, p in enumerate(table.get("partitions", []), start=1):
        parts.append(
            Partition(
                number=_node_number(p.get("node", ""), i),
                start=int(p["start"]),
                size=int(p["size"]),
                type=str(p.get("type", "")),
                uuid=p.get("uuid"),
                name=p.get("name"),
                attrs=p.get("attrs"),
                bootable=bool(p.get("bootable", False)),
            )
        )
    return PartitionTable(
        label=table["label"],
        id=table.get("id"),
        sector_size=int(table.get("sectorsize", 512)),
        partitions=tuple(parts),
        first_lba=table.get("firstlba"),
        last_lba=table.get("lastlba"),
    )


def render_sfdisk_script(table: PartitionTable) -> str:
    """Return an sfdisk script that recreates table exactly (label id, partition uuids, names).

    No device names and no last-lba: the script applies to any disk at least as large.
    """
    lines = [f"label: {table.label}"]
    if table.id:
        lines.append(f"label-id: {table.id}")
    lines += ["unit: sectors", f"sector-size: {table.sector_size}"]
    if table.first_lba is not None:
        lines.append(f"first-lba: {table.first_lba}")
    lines.append("")
    for p in sorted(table.partitions, key=lambda p: p.number):
        fields = [f"start={p.start}", f"size={p.size}", f"type={p.type}"]
        if p.uuid:
            fields.append(f"uuid={p.uuid}")
        if p.name:
            fields.append(f'name="{p.name}"')
        if p.attrs:
            fields.append(f'attrs="{p.attrs}"')
        if p.bootable:
            fields.append("bootable")
        lines.append(", ".join(fields))
    return "\n".join(lines) + "\n"


@dataclass(frozen=True)
class Probe:
    """What blkid reports for one device: TYPE, UUID, LABEL and the rest by key."""

    devname: str
    fields: dict[str, str] = field(default_factory=dict)

    @property
    def type(self) -> str | None:
        return self.fields.get("TYPE")

    @property
    def uuid(self) -> str | None:
        return self.fields.get("UUID")

    @property
    def label(self) -> str | None:
        return self.fields.get("LABEL")


def parse_blkid_export(text: str) -> list[Probe]:
    """Given `blkid -o export` output (blocks separated by blank lines), return one Probe per device.

    A single block without DEVNAME (as `blkid -p -o export` of one device prints) gets devname "".
    """
    probes: list[Probe] = []
    block: dict[str, str] = {}
    for raw in [*text.splitlines(), ""]:
        line = raw.strip()
        if not line:
            if block:
                probes.append(Probe(block.pop("DEVNAME", ""), block))
                block = {}
            continue
        key, sep, value = line.partition("=")
        if not sep or not re.fullmatch(r"[A-Z0-9_]+", key):
            raise ValueError(f"blkid export: unexpected line {raw!r}")
        block[key] = _unquote(value)
    return probes


def _unquote(value: str) -> str:
    if any(c in value for c in "\\'\""):
        try:
            return shlex.split(value)[0] if value else ""
        except ValueError:
            return value
    return value


def subvol_option(options: str) -> str | None:
    """The btrfs subvolume path in mount options ("rw,subvol=/root" → "root"), if any."""
    for opt in options.split(","):
        if opt.startswith("subvol="):
            return opt.removeprefix("subvol=").strip("/")
    return None


@dataclass(frozen=True)
class Mount:
    """One mounted filesystem as findmnt reports it."""

    target: str
    source: str
    fstype: str
    options: str = ""
    uuid: str | None = None
    fsroot: str = "/"

    @property
    def subvol(self) -> str | None:
        """The btrfs subvolume path from the options (subvol=/root → "root"), if any."""
        return subvol_option(self.options)


def parse_findmnt_json(text: str) -> list[Mount]:
    """Given `findmnt -J` output (tree or list), return every mount, flattened, in output order."""
    try:
        roots = json.loads(text)["filesystems"]
    except (ValueError, KeyError, TypeError):
        raise ValueError("findmnt json: no 'filesystems' array (is this `findmnt -J` output?)") from None
    out: list[Mount] = []
    stack = list(reversed(roots))
    while stack:
        fs = stack.pop()
        out.append(
            Mount(
                target=fs.get("target", ""),
                source=fs.get("source", ""),
                fstype=fs.get("fstype", ""),
                options=fs.get("options") or "",
                uuid=fs.get("uuid"),
                fsroot=fs.get("fsroot") or "/",
            )
        )
        stack.extend(reversed(fs.get("children", [])))
    return out


@dataclass(frozen=True)
class FstabEntry:
    spec: str
    file: str
    vfstype: str
    options: str = "defaults"
    freq: int = 0
    passno: int = 0

    @property
    def uuid(self) -> str | None:
        """The filesystem UUID when the entry names one (UUID=… or /dev/disk/by-uuid/…)."""
        if self.spec.startswith("UUID="):
            return self.spec.removeprefix("UUID=").strip('"')
        if self.spec.startswith("/dev/disk/by-uuid/"):
            return self.spec.rsplit("/", 1)[-1]
        return None

    @property
    def subvol(self) -> str | None:
        return subvol_option(self.options)


def parse_fstab(text: str) -> list[FstabEntry]:
    """Given fstab text, return its entries (comments and blank lines skipped). Raise ValueError on a short line."""
    entries = []
    for raw in text.splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        cols = line.split()
        if len(cols) < 3:
            raise ValueError(f"fstab: line needs at least 3 fields: {raw!r}")
        entries.append(
            FstabEntry(
                spec=_fstab_unescape(cols[0]),
                file=_fstab_unescape(cols[1]),
                vfstype=cols[2],
                options=cols[3] if len(cols) > 3 else "defaults",
                freq=int(cols[4]) if len(cols) > 4 and cols[4].isascii() and cols[4].isdigit() else 0,
                passno=int(cols[5]) if len(cols) > 5 and cols[5].isascii() and cols[5].isdigit() else 0,
            )
        )
    return entries


def _fstab_unescape(text: str) -> str:
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), text)


def vfat_volume_id(uuid: str) -> str:
    """Given blkid's vfat UUID ("1A2B-3C4D"), return mkfs.vfat's -i argument ("1A2B3C4D")."""
    return uuid.replace("-", "").upper()
