"""A btrfs endpoint: one side of a replication (a local path, or a path on an ssh host).

The protocol is small: check, ensure_container, list, show, delete, rename, apply
(several of these in one round trip), and the argv stages that send from or receive
into it. Push and pull use the same class and differ only in which side has a
LocalRunner.

Layout: <root>/<host>/<subvolume name>/ is a container subvolume (so that
`btrfs subvolume list -o` lists exactly its children, in one call) holding
`<name>.<UTC timestamp>` entries. A receive lands in the container under the name the
stream carries, is verified (read-only, received_uuid equal to the source's uuid), then
renamed to its final name in the same directory. Anything else in the container is a
partial (invariant 3).
"""

from __future__ import annotations

import builtins
import os
import posixpath
from collections.abc import Sequence

from subvault.btrfs import adapter, fastpath
from subvault.config.schema import TargetConf
from subvault.endpoints import commands as C
from subvault.endpoints.runner import SSH_FAILED, Argv, LocalRunner, Runner, SshRunner, Step, UnreachableHosts, parse_ssh_url
from subvault.errors import CommandFailed, NotBtrfs, NotFound, Refused
from subvault.process import Result

SSH_CONNECTION_ERROR = SSH_FAILED
from subvault.model import Entry
from subvault.plan.replication import parse_entry_time


class Endpoint:
    """One btrfs side: a runner and the root directory subvault owns there (invariant 8)."""

    def __init__(self, runner: Runner, root: str, name: str) -> None:
        self.runner = runner
        self.root = root.rstrip("/") or "/"
        self.name = name

    @property
    def is_local(self) -> bool:
        return isinstance(self.runner, LocalRunner)

    def __enter__(self) -> Endpoint:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.runner.close()

    def _run(self, cmd: Argv, what: str, check: bool = True) -> Result:
        return self.runner.run([cmd], what=f"{self.name}: {what}", check=check)

    def check(self) -> None:
        """Raise NotFound if the root is missing (disk not mounted?), NotBtrfs if it is not on btrfs.

        Raise runner.Unreachable (saying refused, timed out, …) when ssh cannot connect.
        """
        res = self._run(C.fs_type(self.root), "stat", check=False)
        if res.returncode != 0:
            raise NotFound(
                f"target {self.name}: {self.root} does not exist on {self.runner.label}; "
                "is the disk mounted? (subvault never creates the target root)"
            )
        if res.stdout.strip() != "btrfs":
            raise NotBtrfs(f"target {self.name}: {self.root} is on {res.stdout.strip() or 'an unknown filesystem'}, not btrfs")

    def container(self, host: str, sub_name: str) -> str:
        return posixpath.join(self.root, host, sub_name)

    def ensure_container(self, path: str, *, known_missing: bool = False) -> None:
        """Create the container subvolume (and its parent directories) if missing.

        known_missing: the caller has just seen it missing (skips one round trip).

        Raise Refused if path exists but is not a subvolume.
        """
        if not known_missing and self._run(C.show(path), "show container", check=False).returncode == 0:
            return
        try:
            self.apply([[C.mkdirs(posixpath.dirname(path))], [C.create(path)]], "create container")
        except CommandFailed as exc:
            if "exists" in exc.stderr_tail:
                raise Refused(f"target {self.name}: {path} exists and is not a subvolume; move it aside") from None
            raise

    # Below this method, `list` in the class body names it: annotations there say builtins.list.
    def list(self, container: str, sub_name: str) -> list[Entry]:
        """Return the entries in container (none if it does not exist yet)."""
        return self.entries(container, sub_name) or []

    def entries(self, container: str, sub_name: str) -> builtins.list[Entry] | None:
        """Return the entries in container, or None when the container does not exist.

        Names that are not final names are marked incoming (partials, invariant 3).
        """
        if self._fast:
            children = self._fast_children(container)
        else:
            children = self._listed_children(container)
        if children is None:
            return None
        return [
            Entry(name=name, uuid=uuid, received_uuid=received, readonly=ro, incoming=parse_entry_time(sub_name, name) is None)
            for name, uuid, received, ro in children
        ]

    def _listed_children(self, container: str) -> builtins.list[tuple[str, str, str | None, bool]] | None:
        """List container in one round trip: `show && list -u && list -r` (None when it is missing)."""
        steps = [[C.show(container)], [C.list_children(container)], [C.list_readonly(container)]]
        res = self.runner.run_steps(steps, what=f"{self.name}: list {posixpath.basename(container)}", check=False)
        show, listed, readonly = C.split_listing(res.stdout)
        if res.returncode != 0:
            if not show.strip() and res.returncode != SSH_CONNECTION_ERROR:
                return None  # `show` failed: no container (yet)
            raise CommandFailed(res.argv, res.returncode, res.stderr, f"{self.name}: list {container}")
        return [(c.name, c.uuid, c.received_uuid, c.name in readonly) for c in listed]

    @property
    def _fast(self) -> bool:
        """A local endpoint reads subvolumes through libbtrfsutil: no process per call."""
        return self.is_local and adapter.fast_path()

    @staticmethod
    def _fast_children(container: str) -> builtins.list[tuple[str, str, str | None, bool]] | None:
        if not adapter.is_subvolume(container):
            return None
        own = fastpath.subvolume_info(container).id
        return [
            (s.path, s.uuid, s.received_uuid, s.readonly)
            for s in fastpath.list_subvolumes(container, below=True)
            if s.top_level == own
        ]

    def show(self, path: str) -> C.Shown:
        """Return uuid, received_uuid and read-only flag of the subvolume at path. Raise NotFound if none."""
        if self._fast:
            if not adapter.is_subvolume(path):
                raise NotFound(f"target {self.name}: {path} is not a subvolume")
            info = fastpath.subvolume_info(path)
            return C.Shown(info.uuid, info.received_uuid, info.readonly)
        res = self._run(C.show(path), "show", check=False)
        if res.returncode != 0:
            raise NotFound(f"target {self.name}: {path} is not a subvolume")
        return C.parse_show(res.stdout)

    def delete(self, path: str) -> None:
        self._run(C.delete(path), f"delete {posixpath.basename(path)}")

    def apply(self, steps: Sequence[Step], what: str) -> None:
        """Run steps in order, stopping at the first that fails (one round trip to a remote). Raise CommandFailed."""
        if steps:
            self.runner.run_steps(steps, what=f"{self.name}: {what}")

    def rename(self, src: str, dst: str) -> None:
        if self.is_local:
            os.rename(src, dst)
            return
        self._run(C.rename(src, dst), f"rename {posixpath.basename(src)}")

    def send_stages(
        self, path: str, parent: str | None, clones: Sequence[str], *, compress: bool, bulk: bool = False
    ) -> builtins.list[Argv]:
        cmds = [C.send(path, parent, tuple(clones))] + ([C.ZSTD_COMPRESS] if compress else [])
        return self.runner.stages(cmds, bulk=bulk)

    def receive_stages(
        self,
        container: str,
        *,
        compress: bool,
        bulk: bool = False,
        before: Sequence[Step] = (),
        after: Sequence[Step] = (),
        chroot: bool = False,
    ) -> builtins.list[Argv]:
        """Return the stages receiving into container; `before`/`after` steps join them only where runner.joins_steps.

        chroot: the stream is untrusted (pull mode): confine it to the container as `serve` does.
        """
        receive = ["btrfs", "receive", "--chroot", container] if chroot else C.receive(container)
        cmds = ([C.ZSTD_DECOMPRESS] if compress else []) + [receive]
        return self.runner.stages(cmds, bulk=bulk, before=before, after=after)


def open_target(target: TargetConf, *, unreachable: UnreachableHosts | None = None) -> Endpoint:
    """Given a btrfs target's config, return its endpoint (not yet checked).

    unreachable: the hosts ssh could not reach so far in this command (see runner.SshRunner);
    pass the same dict for every target opened by one command.

    Raise ConfigError for a malformed ssh URL, Refused for a non-btrfs target.
    """
    if target.type != "btrfs":
        raise Refused(f"target {target.name} is an object store, not a btrfs target")
    if target.url.startswith("ssh://"):
        url = parse_ssh_url(target.url)
        runner = SshRunner(
            url, identity=target.ssh_identity, cipher=target.ssh_cipher, options=target.ssh_options, unreachable=unreachable
        )
        return Endpoint(runner, url.path, target.name)
    return Endpoint(LocalRunner(), target.url, target.name)
