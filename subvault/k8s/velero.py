"""Velero backup-hook annotations on the pods of this node, run through pods/exec.

Annotations (Velero's names and defaults), with PHASE = `pre` or `post`:

- `PHASE.hook.backup.velero.io/command`: a JSON array (`["/bin/sh", "-c", "sync"]`)
  or a plain string, which is the whole command (one argv element, as in Velero).
- `PHASE.hook.backup.velero.io/container`: default the pod's first container.
- `PHASE.hook.backup.velero.io/on-error`: `Continue` or `Fail`, default `Fail`.
- `PHASE.hook.backup.velero.io/timeout`: a Go duration (`30s`, `1m30s`, `500ms`),
  default 30s.
- The legacy unprefixed `hook.backup.velero.io/…` names mean `pre`, as in Velero.

Rules:
- Parsing is pure; a malformed annotation raises MalformedAnnotation naming the pod
  and the annotation. Where Velero would silently fall back to a default for a bad
  value, subvault refuses: a quiesce hook that silently does not run is worse.
- Hooks run only in Running pods (Velero skips the others).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Literal

from subvault.errors import ConfigError
from subvault.hooks import HookOutcome
from subvault.k8s.client import KubeAuthError, KubeClient, KubeError, PodInfo

Phase = Literal["pre", "post"]
DOMAIN = "hook.backup.velero.io"
DEFAULT_TIMEOUT = 30.0

_DURATION_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "μs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|μs|ms|s|m|h)")


class MalformedAnnotation(ConfigError):
    """A Velero hook annotation on a pod cannot be understood."""


def parse_go_duration(text: str) -> float:
    """Given a Go duration string (`1h2m3.5s`, `500ms`, `0`), return seconds. Raise ValueError."""
    s = text.strip()
    if s in ("0", "+0", "-0"):
        return 0.0
    if s.startswith("-"):
        raise ValueError("a negative duration")
    s = s.removeprefix("+")
    pos, total = 0, 0.0
    while pos < len(s):
        match = _DURATION_PART.match(s, pos)
        if match is None:
            raise ValueError("expected a Go duration such as 30s, 1m30s or 500ms")
        total += float(match.group(1)) * _DURATION_UNITS[match.group(2)]
        pos = match.end()
    if not s:
        raise ValueError("an empty duration")
    return total


def parse_command(text: str) -> tuple[str, ...]:
    """Given a command annotation, return its argv. Raise ValueError if it is malformed."""
    stripped = text.strip()
    if not stripped:
        raise ValueError("an empty command")
    if not stripped.startswith("["):
        return (text,)
    try:
        value = json.loads(stripped)
    except json.JSONDecodeError as e:
        raise ValueError(f"not a valid JSON array ({e.msg} at character {e.pos})") from None
    if not isinstance(value, list) or not value or not all(isinstance(a, str) for a in value):
        raise ValueError("expected a non-empty JSON array of strings")
    return tuple(value)


@dataclass(frozen=True)
class PodHook:
    """One hook to run in one container of one pod."""

    pod: PodInfo
    phase: Phase
    container: str
    command: tuple[str, ...]
    on_error: Literal["Continue", "Fail"] = "Fail"
    timeout: float = DEFAULT_TIMEOUT

    @property
    def name(self) -> str:
        return f"{self.phase} hook in {self.pod}/{self.container}"


def _key(phase: Phase, field: str, annotations: Mapping[str, str]) -> str:
    """Return the annotation name for field; `pre` falls back to the legacy names as a set."""
    if phase == "pre" and f"pre.{DOMAIN}/command" not in annotations:
        return f"{DOMAIN}/{field}"
    return f"{phase}.{DOMAIN}/{field}"


def pod_hook(pod: PodInfo, phase: Phase) -> PodHook | None:
    """Given a pod, return its hook for phase, or None if it has none. Raise MalformedAnnotation."""
    ann = pod.annotations

    def key(field: str) -> str:
        return _key(phase, field, ann)

    if key("command") not in ann:
        return None

    def bad(field: str, why: str) -> MalformedAnnotation:
        return MalformedAnnotation(f"pod {pod}: annotation {key(field)} = {ann.get(key(field))!r}: {why}")

    try:
        command = parse_command(ann[key("command")])
    except ValueError as e:
        raise bad("command", str(e)) from None
    container = ann.get(key("container"), "").strip() or (pod.containers[0] if pod.containers else "")
    if container not in pod.containers:
        raise bad("container", f"the pod has no such container (it has {', '.join(pod.containers) or 'none'})")
    on_error: Literal["Continue", "Fail"]
    match ann.get(key("on-error"), "Fail").strip() or "Fail":
        case "Continue":
            on_error = "Continue"
        case "Fail":
            on_error = "Fail"
        case _:
            raise bad("on-error", "expected Continue or Fail")
    timeout = DEFAULT_TIMEOUT
    if ann.get(key("timeout"), "").strip():
        try:
            timeout = parse_go_duration(ann[key("timeout")]) or DEFAULT_TIMEOUT
        except ValueError as e:
            raise bad("timeout", str(e)) from None
    return PodHook(pod, phase, container, command, on_error, timeout)


@dataclass(frozen=True)
class PodHookPlan:
    pre: tuple[PodHook, ...]
    post: tuple[PodHook, ...]


def plan_pod_hooks(pods: Iterable[PodInfo]) -> PodHookPlan:
    """Given the pods of this node, return their pre and post hooks (Running pods only).

    Raise MalformedAnnotation for the first malformed annotation, in pod order.
    """
    pre: list[PodHook] = []
    post: list[PodHook] = []
    for pod in sorted(pods, key=lambda p: (p.namespace, p.name)):
        if pod.phase != "Running":
            continue
        buckets: tuple[tuple[Phase, list[PodHook]], ...] = (("pre", pre), ("post", post))
        for phase, bucket in buckets:
            hook = pod_hook(pod, phase)
            if hook is not None:
                bucket.append(hook)
    return PodHookPlan(tuple(pre), tuple(post))


def run_pod_hook(client: KubeClient, hook: PodHook, log: Callable[[str], None]) -> HookOutcome:
    """Run one pod hook through pods/exec; return its outcome (exit code, timeout, API error)."""
    log(f"running {hook.name}: {list(hook.command)}")
    try:
        result = client.exec(hook.pod, hook.container, hook.command, hook.timeout)
    except (KubeError, KubeAuthError) as e:
        detail = str(e)
    else:
        if result.exit_code == 0:
            return HookOutcome(hook.name, True)
        tail = (result.stderr.strip().splitlines() or [""])[-1]
        detail = f"exit {result.exit_code}" + (f": {tail}" if tail else "")
    fatal = hook.on_error == "Fail"
    log(f"{hook.name} failed ({'fatal' if fatal else 'continuing'}): {detail}")
    return HookOutcome(hook.name, False, detail, fatal)
