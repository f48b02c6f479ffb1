"""The one narrow interface subvault needs from Kubernetes, and its value types.

Rules:
- Everything above this module (Flux suspension, Velero hooks, pre-change) speaks
  `KubeClient` only; the lightkube adapter is the single implementation that talks
  HTTP. Tests use the same adapter against a loopback fake API server.
- Values are frozen dataclasses built from the API's JSON; nothing above this module
  sees a lightkube object or an httpx error.
- Failures are one of three errors, each with a one-line message: `KubeUnreachable`
  (no connection), `KubeAuthError` (401/403: expired or invalid credentials) and
  `KubeApiError` (the API answered with another error).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal, Protocol

from subvault.errors import SubvaultError

FluxKind = Literal["Kustomization", "HelmRelease"]
FLUX_KINDS: tuple[FluxKind, ...] = ("Kustomization", "HelmRelease")

# The API group/version/plural of each Flux kind subvault suspends.
FLUX_API: dict[FluxKind, tuple[str, str, str]] = {
    "Kustomization": ("kustomize.toolkit.fluxcd.io", "v1", "kustomizations"),
    "HelmRelease": ("helm.toolkit.fluxcd.io", "v2", "helmreleases"),
}

# Server-side apply bookkeeping records this name; it must not start with "kubectl".
FIELD_MANAGER = "subvault"


class KubeError(SubvaultError):
    """Root of the Kubernetes errors."""


class KubeUnreachable(KubeError):
    """No connection to the API server (refused, DNS, TLS, timeout)."""


class KubeAuthError(SubvaultError):
    """The API server rejected the credentials (401) or the permission (403)."""


class KubeApiError(KubeError):
    """The API server answered with an error other than 401/403."""

    def __init__(self, message: str, code: int = 0) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True, order=True)
class ObjRef:
    """A namespaced object of one Flux kind."""

    kind: FluxKind
    namespace: str
    name: str

    def __str__(self) -> str:
        return f"{self.kind}/{self.namespace}/{self.name}"


@dataclass(frozen=True)
class Condition:
    type: str
    status: str
    reason: str = ""


@dataclass(frozen=True)
class FluxObject:
    """What subvault reads of a Kustomization or HelmRelease."""

    ref: ObjRef
    suspended: bool
    annotations: Mapping[str, str] = field(default_factory=dict)
    labels: Mapping[str, str] = field(default_factory=dict)
    conditions: tuple[Condition, ...] = ()
    generation: int = 0
    observed_generation: int = 0


@dataclass(frozen=True)
class PodInfo:
    """A pod on this node: its containers (in spec order) and its annotations."""

    namespace: str
    name: str
    containers: tuple[str, ...]
    annotations: Mapping[str, str] = field(default_factory=dict)
    phase: str = "Running"

    def __str__(self) -> str:
        return f"{self.namespace}/{self.name}"


@dataclass(frozen=True)
class ExecResult:
    exit_code: int
    stdout: str
    stderr: str


class ExecTimeout(KubeError):
    """A command run through pods/exec did not finish within its timeout."""


class KubeClient(Protocol):
    """The four calls subvault makes to Kubernetes."""

    @property
    def server(self) -> str:
        """The API server URL, for messages."""
        ...

    def list_flux(self, kind: FluxKind) -> list[FluxObject]:
        """Return every object of kind in all namespaces; [] when the CRD is not served."""
        ...

    def patch_flux(self, ref: ObjRef, *, suspend: bool, annotations: Mapping[str, str | None]) -> FluxObject:
        """Merge-patch spec.suspend and the annotations (None deletes one) as FIELD_MANAGER."""
        ...

    def list_node_pods(self, node: str) -> list[PodInfo]:
        """Return the pods scheduled on node, in all namespaces."""
        ...

    def exec(self, pod: PodInfo, container: str, command: Sequence[str], timeout: float) -> ExecResult:
        """Run command in the container through pods/exec; raise ExecTimeout after timeout seconds."""
        ...


# FluxClient is the same interface; the name reads better where only Flux is meant.
FluxClient = KubeClient
