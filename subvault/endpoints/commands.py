"""The endpoint command vocabulary: the only commands subvault runs on a btrfs endpoint.

Both sides use this one module: the client builds these argvs (run locally, or joined
into an ssh command line), and `subvault serve` accepts exactly these shapes and
nothing else. A plain remote with btrfs-progs and coreutils runs them as they are.

A remote command is one step or several joined by ` && ` (run in order, stopping at the
first failure), each step one command or a pipeline joined by ` | `.

Shapes (PATH always absolute):
  stat -f -c %T PATH                       filesystem type ("btrfs")
  btrfs subvolume list -o -u -q -R PATH    children of the container subvolume
  btrfs subvolume list -o -r PATH          ... the read-only ones
  btrfs subvolume show PATH                one subvolume's uuid, received_uuid, flags
  btrfs subvolume create PATH              the per-subvolume container
  mkdir -p PATH
  mv -T SRC DST                            name a verified receive (same directory)
  btrfs subvolume delete PATH              partials and pruned entries
  btrfs subvolume sync PATH                wait until deleted partials free their space
  btrfs receive PATH                       optionally after `zstd -d -c |`
  btrfs send -q [-p P] [-c C]... PATH      optionally before `| zstd -c -T0`
  subvault snapshots PATH                  a pull source's snapshots, as JSON
  subvault pulled --puller NAME PATH UUID  a puller's base on its source (subvault.pullholds)
"""

from __future__ import annotations

from dataclasses import dataclass

from subvault.btrfs.parse import list_line, show_fields, uuid_or_none

Argv = list[str]

ZSTD_COMPRESS: Argv = ["zstd", "-c", "-T0", "-3", "-q"]
ZSTD_DECOMPRESS: Argv = ["zstd", "-d", "-c", "-q"]


def fs_type(path: str) -> Argv:
    return ["stat", "-f", "-c", "%T", path]


def list_children(path: str) -> Argv:
    return ["btrfs", "subvolume", "list", "-o", "-u", "-q", "-R", path]


def list_readonly(path: str) -> Argv:
    return ["btrfs", "subvolume", "list", "-o", "-r", path]


def show(path: str) -> Argv:
    return ["btrfs", "subvolume", "show", path]


def create(path: str) -> Argv:
    return ["btrfs", "subvolume", "create", path]


def mkdirs(path: str) -> Argv:
    return ["mkdir", "-p", path]


def rename(src: str, dst: str) -> Argv:
    return ["mv", "-T", src, dst]


def delete(path: str) -> Argv:
    return ["btrfs", "subvolume", "delete", path]


def sync(path: str) -> Argv:
    return ["btrfs", "subvolume", "sync", path]


def commit(path: str) -> Argv:
    """Commit the filesystem's transaction: space freed by deletions shows as free at once."""
    return ["btrfs", "filesystem", "sync", path]


def receive(path: str) -> Argv:
    return ["btrfs", "receive", path]


def snapshots(path: str) -> Argv:
    """List the snapper-layout snapshots of the subvolume at path, as JSON (needs subvault on that host)."""
    return ["subvault", "snapshots", path]


def pulled(puller: str, path: str, uuid: str) -> Argv:
    """Record on a pull source that `puller`'s incremental base for the subvolume at path is uuid (needs subvault there)."""
    return ["subvault", "pulled", "--puller", puller, path, uuid]


def send(path: str, parent: str | None = None, clones: tuple[str, ...] = ()) -> Argv:
    argv = ["btrfs", "send", "-q"]
    if parent:
        argv += ["-p", parent]
    for c in clones:
        argv += ["-c", c]
    return [*argv, path]


@dataclass(frozen=True)
class Child:
    """A subvolume directly inside a container, as `btrfs subvolume list -o` reports it."""

    name: str
    uuid: str
    received_uuid: str | None
    parent_uuid: str | None


def parse_list(text: str) -> list[Child]:
    """Given `btrfs subvolume list -o -u -q -R` output, return each child by its last path component."""
    out = []
    for line in text.splitlines():
        fields = list_line(line)
        if "uuid" not in fields or "path" not in fields:
            continue
        out.append(
            Child(
                name=fields["path"].rstrip("/").rsplit("/", 1)[-1],
                uuid=fields["uuid"],
                received_uuid=uuid_or_none(fields.get("received_uuid")),
                parent_uuid=uuid_or_none(fields.get("parent_uuid")),
            )
        )
    return out


def split_listing(text: str) -> tuple[str, list[Child], set[str]]:
    """Split the output of `show C && list_children C && list_readonly C` into its three parts.

    List lines start with "ID "; those with a uuid field come from list_children, the
    others from list_readonly; everything else is the show output.
    """
    show: list[str] = []
    children: list[str] = []
    readonly: list[str] = []
    for line in text.splitlines():
        if not line.startswith("ID "):
            show.append(line)
        elif "uuid" in list_line(line):
            children.append(line)
        else:
            readonly.append(line)
    return "\n".join(show), parse_list("\n".join(children)), parse_readonly_names("\n".join(readonly))


def parse_readonly_names(text: str) -> set[str]:
    """Given `btrfs subvolume list -o -r` output, return the last path component of each."""
    return {f["path"].rstrip("/").rsplit("/", 1)[-1] for f in map(list_line, text.splitlines()) if "path" in f}


@dataclass(frozen=True)
class Shown:
    uuid: str
    received_uuid: str | None
    readonly: bool


def parse_show(text: str) -> Shown:
    """Given `btrfs subvolume show` output, return its uuid, received_uuid and read-only flag.

    Raise ValueError if there is no UUID line.
    """
    _, fields = show_fields(text)
    if "UUID" not in fields:
        raise ValueError("no UUID in `btrfs subvolume show` output")
    return Shown(fields["UUID"], uuid_or_none(fields.get("Received UUID")), "readonly" in fields.get("Flags", ""))
