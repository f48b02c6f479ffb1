"""The config schema: the one source of validation, defaults, the sample and the docs.

Every key is declared once here, with its default and a description. `load.py` turns
pydantic's errors into one line per problem that names the file, the key and what was
expected; `sample.py` renders the commented sample config from these same fields.
Unknown keys are errors (a typo must never silently disable a backup).
"""

from __future__ import annotations

import re
from pathlib import PurePosixPath
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


def _retention(value: str) -> str:
    from subvault.plan.retention import RetentionSyntaxError, parse_policy

    try:
        parse_policy(value)
    except RetentionSyntaxError as exc:
        raise ValueError(str(exc)) from None
    return value


def _duration(value: str) -> str:
    from subvault.timeutil import parse_duration

    parse_duration(value)  # raises ValueError with a readable message
    return value


def _name(value: str) -> str:
    if not NAME_RE.match(value):
        raise ValueError(f'"{value}" is not a valid name (expected letters, digits, "_", "-" or ".")')
    return value


def _abs_path(value: str) -> str:
    if not value.startswith("/"):
        raise ValueError(f'"{value}" is not an absolute path')
    return str(PurePosixPath(value))


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Defaults(Strict):
    timeline: str = Field("24h 7d 4w", description="local timeline retention; the finest unit is the snapshot cadence")
    prechange_keep: int = Field(10, ge=0, description="pre-change snapshots kept per subvolume")
    targets: list[str] = Field(default_factory=list, description="targets every subvolume goes to unless it says otherwise")
    state_dir: str = Field("/var/lib/subvault", description="local cache and lock; safe to delete (invariant 12)")
    timezone: str | None = Field(None, description="IANA zone for retention periods; default: the system's local time")

    _v_timeline = field_validator("timeline")(lambda cls, v: _retention(v))
    _v_state = field_validator("state_dir")(lambda cls, v: _abs_path(v))

    @field_validator("timezone")
    @classmethod
    def _zone(cls, v: str | None) -> str | None:
        if v is None:
            return v
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

        try:
            ZoneInfo(v)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f'"{v}" is not a known time zone (expected e.g. "Europe/Berlin")') from None
        return v


class SubvolumeConf(Strict):
    name: str = Field(description="short name, used on targets and in commands")
    path: str = Field(description="where the subvolume is mounted or reachable")
    targets: list[str] | None = Field(None, description="overrides defaults.targets")
    timeline: str | None = Field(None, description="overrides defaults.timeline")
    prechange_keep: int | None = Field(None, ge=0, description="overrides defaults.prechange_keep")

    _v_name = field_validator("name")(lambda cls, v: _name(v))
    _v_path = field_validator("path")(lambda cls, v: _abs_path(v))

    @field_validator("timeline")
    @classmethod
    def _tl(cls, v: str | None) -> str | None:
        return v if v is None else _retention(v)


class ExcludeConf(Strict):
    path: str = Field(description="a subvolume deliberately not protected")
    reason: str = Field(min_length=1, description="why it is safe to lose; shown by check")

    _v_path = field_validator("path")(lambda cls, v: _abs_path(v))

    @field_validator("reason")
    @classmethod
    def _reason(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("an exclude needs a reason")
        return v


class TargetConf(Strict):
    name: str = Field(description="target name, used in subvolume.targets and --target")
    type: Literal["btrfs", "object"] = Field(description='"btrfs" (local path or ssh://) or "object" (s3:// or file://)')
    url: str = Field(description="btrfs: /path or ssh://[user@]host[:port]/path; object: s3://bucket/prefix or file:///path")
    keep: str = Field("24h 8d 5w", description="retention on the target")
    # btrfs targets
    compress: Literal["none", "zstd"] = Field("none", description="btrfs over ssh: compress the stream on the wire")
    ssh_identity: str | None = Field(None, description="ssh private key file (else ~/.ssh/config decides)")
    ssh_cipher: str | None = Field(None, description='ssh cipher, e.g. "aes128-gcm@openssh.com"')
    ssh_options: list[str] = Field(default_factory=list, description='extra "-o" options, e.g. "ConnectTimeout=10"')
    stall_minutes: float = Field(10.0, gt=0, description="a transfer with no bytes for this long is stopped")
    # object targets
    endpoint: str | None = Field(None, description="S3 endpoint URL")
    region: str | None = Field(None, description="S3 region")
    path_style: bool = Field(True, description="S3 path-style addressing")
    credentials: str | None = Field(None, description="file with AWS_ACCESS_KEY_ID= and AWS_SECRET_ACCESS_KEY= lines (mode 0600)")
    recipients: list[str] = Field(default_factory=list, description="age public keys; the identity stays offline")
    full_every: str = Field("30d", description="a full send at least this often, bounding chain length")
    part_size_mib: int = Field(64, ge=1, le=4096, description="size of each uploaded part")
    object_lock_days: int | None = Field(None, ge=1, description="S3 Object Lock retention beyond the chain's life")

    _v_name = field_validator("name")(lambda cls, v: _name(v))
    _v_keep = field_validator("keep")(lambda cls, v: _retention(v))
    _v_full = field_validator("full_every")(lambda cls, v: _duration(v))

    @model_validator(mode="after")
    def _url_matches_type(self) -> "TargetConf":
        url = self.url
        if self.type == "btrfs":
            if not (url.startswith("/") or url.startswith("ssh://")):
                raise ValueError(f'url: "{url}" is not a btrfs target (expected "/mnt/usb/backup" or "ssh://user@host:22/path")')
        else:
            if not (url.startswith("s3://") or url.startswith("file:///")):
                raise ValueError(f'url: "{url}" is not an object target (expected "s3://bucket/prefix" or "file:///path")')
            for r in self.recipients:
                if not r.startswith("age1"):
                    raise ValueError(f'recipients: "{r[:12]}…" is not an age public key (expected "age1…"); never put the identity here')
        return self


class NotifyConf(Strict):
    urls: list[str] = Field(default_factory=list, description="Apprise URLs (tgram://, json://, mailto://, …)")
    ping: str | None = Field(None, description="dead-man switch URL, healthchecks.io style")


class FluxConf(Strict):
    kubeconfig: str = Field(description="kubeconfig used to suspend and resume Flux")
    namespaces: list[str] | None = Field(None, description="limit suspension to these namespaces (default: all)")
    wait_seconds: float = Field(120.0, ge=0, description="bounded wait for reconciles in flight")


class HookConf(Strict):
    when: Literal["pre-snapshot", "post-snapshot"]
    run: list[str] = Field(min_length=1, description="argv, run without a shell")
    timeout: float = Field(60.0, gt=0)


class CheckConf(Strict):
    slack: str = Field("1h", description="tolerated lateness beyond each layer's cadence")
    drill_max_age: str = Field("30d", description="warn when the last successful drill is older")
    min_free_percent: float = Field(10.0, ge=0, le=100, description="warn below this much free space")

    _v_slack = field_validator("slack", "drill_max_age")(lambda cls, v: _duration(v))


class Config(Strict):
    defaults: Defaults = Field(default_factory=Defaults)
    subvolume: list[SubvolumeConf] = Field(default_factory=list)
    exclude: list[ExcludeConf] = Field(default_factory=list)
    target: list[TargetConf] = Field(default_factory=list)
    notify: NotifyConf = Field(default_factory=NotifyConf)
    flux: FluxConf | None = None
    hook: list[HookConf] = Field(default_factory=list)
    check: CheckConf = Field(default_factory=CheckConf)

    @model_validator(mode="after")
    def _cross_refs(self) -> "Config":
        _unique("subvolume", [s.name for s in self.subvolume])
        _unique("subvolume path", [s.path for s in self.subvolume])
        _unique("target", [t.name for t in self.target])
        known = {t.name for t in self.target}
        for t in self.defaults.targets:
            if t not in known:
                raise ValueError(f'defaults.targets: "{t}" is not a configured [[target]] (known: {", ".join(sorted(known)) or "none"})')
        for s in self.subvolume:
            for t in s.targets or []:
                if t not in known:
                    raise ValueError(f'subvolume "{s.name}": targets: "{t}" is not a configured [[target]]')
        protected = {s.path for s in self.subvolume}
        for e in self.exclude:
            if e.path in protected:
                raise ValueError(f'exclude "{e.path}" is also a [[subvolume]]; keep one of them')
        return self

    # ---- derived views (no I/O) ----
    def targets_of(self, sub: SubvolumeConf) -> list[str]:
        return list(sub.targets if sub.targets is not None else self.defaults.targets)

    def timeline_of(self, sub: SubvolumeConf) -> str:
        return sub.timeline or self.defaults.timeline

    def prechange_keep_of(self, sub: SubvolumeConf) -> int:
        return sub.prechange_keep if sub.prechange_keep is not None else self.defaults.prechange_keep

    def get_subvolume(self, name: str) -> SubvolumeConf:
        from subvault.errors import NotFound

        for s in self.subvolume:
            if s.name == name:
                return s
        raise NotFound(f'no subvolume named "{name}" in the config (known: {", ".join(s.name for s in self.subvolume)})')

    def get_target(self, name: str) -> TargetConf:
        from subvault.errors import NotFound

        for t in self.target:
            if t.name == name:
                return t
        raise NotFound(f'no target named "{name}" in the config (known: {", ".join(t.name for t in self.target) or "none"})')


def _unique(what: str, names: list[str]) -> None:
    seen: set[str] = set()
    for n in names:
        if n in seen:
            raise ValueError(f'{what} "{n}" is defined twice')
        seen.add(n)
