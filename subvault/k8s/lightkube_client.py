"""`KubeClient` over lightkube: the only module that talks HTTP to Kubernetes.

Why lightkube (measured in docs/prechange.md): it is already a dependency, imports in
~0.12 s (kr8s ~0.18 s plus cryptography, python-box and jsonpath), is synchronous, and
since 1.0 runs pods/exec over the websocket channel protocol (v5/v4) through httpx2.

Rules:
- Patches are JSON merge patches on spec.suspend and metadata.annotations, sent with
  fieldManager=FIELD_MANAGER.
- Every lightkube/httpx error is turned into KubeUnreachable, KubeAuthError or
  KubeApiError here, with a one-line message naming the server and the kubeconfig.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from subvault.errors import ConfigError
from subvault.k8s.client import (
    FIELD_MANAGER,
    FLUX_API,
    Condition,
    ExecResult,
    ExecTimeout,
    FluxKind,
    FluxObject,
    KubeApiError,
    KubeAuthError,
    KubeUnreachable,
    ObjRef,
    PodInfo,
)

DEFAULT_TIMEOUT = 10.0


def flux_object_from_dict(kind: FluxKind, raw: Mapping[str, Any]) -> FluxObject:
    """Given a Flux object as the API returns it, return its FluxObject."""
    meta = raw.get("metadata") or {}
    spec = raw.get("spec") or {}
    status = raw.get("status") or {}
    conditions = tuple(
        Condition(str(c.get("type", "")), str(c.get("status", "")), str(c.get("reason", "")))
        for c in status.get("conditions") or ()
    )
    return FluxObject(
        ref=ObjRef(kind, str(meta.get("namespace", "")), str(meta.get("name", ""))),
        suspended=bool(spec.get("suspend", False)),
        annotations=dict(meta.get("annotations") or {}),
        labels=dict(meta.get("labels") or {}),
        conditions=conditions,
        generation=int(meta.get("generation") or 0),
        observed_generation=int(status.get("observedGeneration") or 0),
    )


def pod_from_dict(raw: Mapping[str, Any]) -> PodInfo:
    """Given a Pod as the API returns it, return its PodInfo."""
    meta = raw.get("metadata") or {}
    spec = raw.get("spec") or {}
    return PodInfo(
        namespace=str(meta.get("namespace", "")),
        name=str(meta.get("name", "")),
        containers=tuple(str(c.get("name", "")) for c in spec.get("containers") or ()),
        annotations=dict(meta.get("annotations") or {}),
        phase=str((raw.get("status") or {}).get("phase", "")),
    )


class LightkubeClient:
    """KubeClient backed by a lightkube Client built from one kubeconfig file."""

    def __init__(self, kubeconfig: Path, *, timeout: float = DEFAULT_TIMEOUT) -> None:
        """Load kubeconfig (no network yet). Raise ConfigError if it is missing or malformed."""
        import httpx2
        from lightkube import Client, KubeConfig
        from lightkube.core.exceptions import ConfigError as LkConfigError

        self.kubeconfig = Path(kubeconfig)
        try:
            config = KubeConfig.from_file(self.kubeconfig)
            single = config.get()
        except (OSError, LkConfigError, ValueError, TypeError, AttributeError) as e:
            raise ConfigError(f"[flux] kubeconfig = {str(self.kubeconfig)!r}: cannot load it: {e}") from None
        if single is None:
            raise ConfigError(f"[flux] kubeconfig = {str(self.kubeconfig)!r}: it names no current context")
        self._server = single.cluster.server
        self._client = Client(config=config, field_manager=FIELD_MANAGER, timeout=httpx2.Timeout(timeout))
        self._resources = {kind: self._resource(kind) for kind in FLUX_API}

    @staticmethod
    def _resource(kind: FluxKind) -> Any:
        from lightkube.generic_resource import create_namespaced_resource

        group, version, plural = FLUX_API[kind]
        return create_namespaced_resource(group, version, kind, plural)

    @property
    def server(self) -> str:
        return self._server

    def close(self) -> None:
        self._client.close()

    @contextlib.contextmanager
    def _translate(self, what: str) -> Iterator[None]:
        """Turn lightkube/httpx errors raised while doing `what` into subvault's Kube errors."""
        import httpx2
        from httpx2.websockets import HTTPXWSException, WebSocketUpgradeError

        try:
            yield
        except httpx2.HTTPStatusError as e:
            raise self._status_error(what, _status_code(e), _api_message(e)) from None
        except WebSocketUpgradeError as e:
            raise self._status_error(what, e.response.status_code, _response_message(e.response)) from None
        except (httpx2.TransportError, HTTPXWSException) as e:
            raise KubeUnreachable(
                f"cannot reach the Kubernetes API at {self._server} ({what}): {type(e).__name__}: {e or 'no detail'}; "
                f"is the cluster running? ([flux] kubeconfig = {self.kubeconfig})"
            ) from None

    def _status_error(self, what: str, code: int, message: str) -> Exception:
        if code == 401:
            return KubeAuthError(
                f"the Kubernetes API at {self._server} rejected the credentials in {self.kubeconfig} "
                f"(401 Unauthorized): they are expired or invalid; renew the kubeconfig"
            )
        if code == 403:
            return KubeAuthError(
                f"the Kubernetes API at {self._server} forbids {what} (403 Forbidden): {message}; "
                f"give the user in {self.kubeconfig} that permission"
            )
        return KubeApiError(f"Kubernetes API at {self._server}: {what} failed ({code}): {message}", code)

    def list_flux(self, kind: FluxKind) -> list[FluxObject]:
        """Return every object of kind in all namespaces; [] when the CRD is not served."""
        from lightkube import ALL_NS

        try:
            with self._translate(f"list {kind}s"):
                items = list(self._client.list(self._resources[kind], namespace=ALL_NS))
        except KubeApiError as e:
            if e.code == 404:
                return []
            raise
        return [flux_object_from_dict(kind, dict(item)) for item in items]

    def patch_flux(self, ref: ObjRef, *, suspend: bool, annotations: Mapping[str, str | None]) -> FluxObject:
        """Merge-patch spec.suspend and the annotations (None deletes one) as FIELD_MANAGER."""
        from lightkube.types import PatchType

        body = {"metadata": {"annotations": dict(annotations)}, "spec": {"suspend": suspend}}
        with self._translate(f"patch {ref}"):
            obj = self._client.patch(
                self._resources[ref.kind],
                ref.name,
                body,
                namespace=ref.namespace,
                patch_type=PatchType.MERGE,
                field_manager=FIELD_MANAGER,
            )
        return flux_object_from_dict(ref.kind, dict(obj))

    def list_node_pods(self, node: str) -> list[PodInfo]:
        """Return the pods scheduled on node, in all namespaces."""
        from lightkube import ALL_NS
        from lightkube.resources.core_v1 import Pod

        with self._translate(f"list pods on node {node}"):
            pods = list(self._client.list(Pod, namespace=ALL_NS, fields={"spec.nodeName": node}))
        return [pod_from_dict(p.to_dict()) for p in pods]

    def exec(self, pod: PodInfo, container: str, command: Sequence[str], timeout: float) -> ExecResult:
        """Run command in the container through pods/exec; raise ExecTimeout after timeout seconds.

        On timeout the websocket is closed. Kubernetes does not kill the process in
        the container when an exec stream closes (Velero has the same limit).
        """
        import httpx2

        with self._translate(f"exec in {pod}/{container}"):
            try:
                resp = self._client.exec(
                    pod.name,
                    namespace=pod.namespace,
                    container=container,
                    command=list(command),
                    stdout=True,
                    stderr=True,
                    timeout=timeout,
                )
            except (httpx2.ReadTimeout, TimeoutError):  # lightkube raises either, by version
                raise ExecTimeout(f"{pod}/{container}: {list(command)} did not finish within {timeout:g}s") from None
        return ExecResult(resp.exit_code, _text(resp.stdout), _text(resp.stderr))


def _text(value: str | bytes | None) -> str:
    if value is None:
        return ""
    return value.decode(errors="replace") if isinstance(value, bytes) else value


def _status_code(e: Exception) -> int:
    response = getattr(e, "response", None)
    if response is not None:
        return int(response.status_code)
    status = getattr(e, "status", None)  # an exec Failure on the error channel has no response
    return int(getattr(status, "code", None) or 0)


def _api_message(e: Exception) -> str:
    status = getattr(e, "status", None)
    if status is not None and getattr(status, "message", None):
        return str(status.message)
    response = getattr(e, "response", None)
    return _response_message(response) if response is not None else str(e)


def _response_message(response: Any) -> str:
    try:
        response.read()
        data = response.json()
        return str(data.get("message") or data)
    except Exception:  # noqa: BLE001 - the body is only decoration for a message
        return (getattr(response, "reason_phrase", "") or "no detail").strip()
