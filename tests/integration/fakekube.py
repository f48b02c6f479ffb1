"""A loopback fake of the Kubernetes API paths subvault uses, over plain HTTP.

Served (the real paths and payloads):
- GET   /apis/kustomize.toolkit.fluxcd.io/v1/kustomizations            (all namespaces)
- GET   /apis/kustomize.toolkit.fluxcd.io/v1/namespaces/NS/kustomizations[/NAME]
- PATCH /apis/kustomize.toolkit.fluxcd.io/v1/namespaces/NS/kustomizations/NAME
        (application/merge-patch+json, ?fieldManager=…)
- the same for /apis/helm.toolkit.fluxcd.io/v2/…/helmreleases
- GET   /api/v1/pods?fieldSelector=spec.nodeName=NODE
- GET   /api/v1/namespaces/NS/pods/NAME/exec?command=…&container=…  — a websocket
        upgrade speaking the channel protocol v5.channel.k8s.io / v4.channel.k8s.io:
        binary messages prefixed by channel 1 (stdout), 2 (stderr), 3 (status JSON).

Every request is recorded as a `Call` (method, path, query, body, field manager) in
`FakeKube.calls`; tests add their own markers with `mark()` to check the order of
API calls against other events. A token, when set, is required (else 401 Status).
"""

from __future__ import annotations

import base64
import copy
import hashlib
import json
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from wsproto.connection import Connection, ConnectionType
from wsproto.events import BytesMessage, CloseConnection, Ping

FLUX = {
    ("kustomize.toolkit.fluxcd.io", "v1", "kustomizations"): "Kustomization",
    ("helm.toolkit.fluxcd.io", "v2", "helmreleases"): "HelmRelease",
}
API_VERSION = {kind: f"{g}/{v}" for (g, v, _), kind in FLUX.items()}
WS_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


@dataclass
class Call:
    method: str
    path: str
    query: dict[str, list[str]] = field(default_factory=dict)
    body: Any = None
    content_type: str = ""

    @property
    def field_manager(self) -> str | None:
        return (self.query.get("fieldManager") or [None])[0]


@dataclass(frozen=True)
class ExecReply:
    stdout: str = ""
    stderr: str = ""
    exit_code: int = 0
    hang: bool = False  # block until the client gives up (closes the websocket)


@dataclass
class ExecCall:
    namespace: str
    pod: str
    container: str
    command: list[str]
    abandoned: threading.Event = field(default_factory=threading.Event)


def flux_obj(kind: str, ns: str, name: str, *, suspend: bool | None = None, annotations: dict | None = None,
             labels: dict | None = None, ready: str = "True") -> dict:
    """Return a Kustomization/HelmRelease as the API would store it."""
    spec: dict[str, Any] = {"interval": "10m", "prune": True} if kind == "Kustomization" else {"interval": "10m"}
    if suspend is not None:
        spec["suspend"] = suspend
    meta: dict[str, Any] = {"name": name, "namespace": ns, "generation": 1, "resourceVersion": "1"}
    if annotations:
        meta["annotations"] = dict(annotations)
    if labels:
        meta["labels"] = dict(labels)
    return {
        "apiVersion": API_VERSION[kind],
        "kind": kind,
        "metadata": meta,
        "spec": spec,
        "status": {"observedGeneration": 1, "conditions": [{"type": "Ready", "status": ready, "reason": "x"}]},
    }


def pod_obj(ns: str, name: str, node: str, containers: list[str], annotations: dict | None = None,
            phase: str = "Running") -> dict:
    """Return a Pod as the API would return it."""
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": ns, "annotations": dict(annotations or {})},
        "spec": {"nodeName": node, "containers": [{"name": c, "image": "busybox"} for c in containers]},
        "status": {"phase": phase},
    }


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def status(code: int, reason: str, message: str) -> dict:
    return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": message, "reason": reason, "code": code}


class FakeKube:
    """The fake API server; use as a context manager or call start()/stop()."""

    def __init__(self, *, token: str | None = None) -> None:
        self.token = token
        self.objects: dict[tuple[str, str, str], dict] = {}
        self.pods: list[dict] = []
        self.calls: list[Call | str] = []
        self.execs: list[ExecCall] = []
        self.served_kinds = set(FLUX.values())
        self.exec_handler: Callable[[ExecCall], ExecReply] = lambda call: ExecReply()
        self.on_list: Callable[[str], None] | None = None  # called before each Flux list
        self.fail_patch: Callable[[Call], int | None] = lambda call: None  # return an HTTP code to fail
        self.lock = threading.RLock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,), daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> FakeKube:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> FakeKube:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def add(self, obj: dict) -> None:
        meta = obj["metadata"]
        with self.lock:
            self.objects[(obj["kind"], meta["namespace"], meta["name"])] = obj

    def get(self, kind: str, ns: str, name: str) -> dict:
        with self.lock:
            return copy.deepcopy(self.objects[(kind, ns, name)])

    def mark(self, event: str) -> None:
        with self.lock:
            self.calls.append(event)

    def patches(self) -> list[Call]:
        return [c for c in self.calls if isinstance(c, Call) and c.method == "PATCH"]

    def write_kubeconfig(self, path: Path, *, token: str | None = None, server: str | None = None) -> Path:
        """Write a kubeconfig for this server (JSON is valid YAML)."""
        user: dict[str, Any] = {"token": token} if token else {}
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "fake", "cluster": {"server": server or self.url}}],
            "users": [{"name": "u", "user": user}],
            "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "u"}}],
            "current-context": "fake",
        }
        path.write_text(json.dumps(config))
        return path


def _handler(fake: FakeKube) -> type[BaseHTTPRequestHandler]:
    class Handler(_Handler):
        pass

    Handler.fake = fake
    return Handler


class _Handler(BaseHTTPRequestHandler):
    fake: FakeKube
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
        pass

    def _record(self, body: Any = None) -> Call:
        parts = urlsplit(self.path)
        call = Call(self.command, parts.path, parse_qs(parts.query), body, self.headers.get("Content-Type", ""))
        with self.fake.lock:
            self.fake.calls.append(call)
        return call

    def _send(self, code: int, payload: Any) -> None:
        data = json.dumps(payload).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _authorized(self) -> bool:
        if self.fake.token is None or self.headers.get("Authorization") == f"Bearer {self.fake.token}":
            return True
        self._send(401, status(401, "Unauthorized", "Unauthorized"))
        return False

    def do_GET(self) -> None:
        call = self._record()
        if not self._authorized():
            return
        parts = call.path.strip("/").split("/")
        if parts[:2] == ["api", "v1"]:
            return self._core(call, parts[2:])
        return self._flux(call, parts)

    def do_PATCH(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        call = self._record(json.loads(raw) if raw else None)
        if not self._authorized():
            return
        parts = call.path.strip("/").split("/")
        return self._flux(call, parts)

    def _flux(self, call: Call, parts: list[str]) -> None:
        fake = self.fake
        route = _flux_route(parts)
        if route is None:
            return self._send(404, status(404, "NotFound", f"the server could not find the requested resource {call.path}"))
        kind, ns, name = route
        group, plural = parts[1], parts[-1] if name is None else parts[-2]
        if kind not in fake.served_kinds:
            return self._send(404, status(404, "NotFound", "the server could not find the requested resource"))
        ns = parts[4] if len(parts) >= 6 else None
        name = parts[6] if len(parts) == 7 else None
        if name is None:
            if fake.on_list is not None:
                fake.on_list(kind)
            with fake.lock:
                items = [copy.deepcopy(o) for (k, n, _), o in sorted(fake.objects.items()) if k == kind and ns in (None, n)]
            return self._send(200, {"apiVersion": API_VERSION[kind], "kind": f"{kind}List",
                                    "metadata": {"resourceVersion": "1"}, "items": items})
        key = (kind, ns, name)
        with fake.lock:
            if key not in fake.objects:
                return self._send(404, status(404, "NotFound", f'{plural}.{group} "{name}" not found'))
            if call.method == "GET":
                return self._send(200, copy.deepcopy(fake.objects[key]))
            failing = fake.fail_patch(call)
            if failing:
                return self._send(failing, status(failing, "InternalError", "injected failure"))
            if call.content_type != "application/merge-patch+json":
                return self._send(415, status(415, "UnsupportedMediaType", call.content_type))
            obj = merge_patch(fake.objects[key], call.body)
            obj["metadata"]["resourceVersion"] = str(int(obj["metadata"].get("resourceVersion", "1")) + 1)
            fake.objects[key] = obj
            return self._send(200, copy.deepcopy(obj))

    def _core(self, call: Call, parts: list[str]) -> None:
        if parts == ["pods"]:
            selector = (call.query.get("fieldSelector") or [""])[0]
            node = selector.removeprefix("spec.nodeName=") if selector.startswith("spec.nodeName=") else None
            with self.fake.lock:
                items = [copy.deepcopy(p) for p in self.fake.pods if node is None or p["spec"]["nodeName"] == node]
            return self._send(200, {"apiVersion": "v1", "kind": "PodList", "metadata": {}, "items": items})
        if len(parts) == 5 and parts[0] == "namespaces" and parts[2] == "pods" and parts[4] == "exec":
            return self._exec(call, parts[1], parts[3])
        return self._send(404, status(404, "NotFound", "not found"))

    def _exec(self, call: Call, ns: str, name: str) -> None:
        with self.fake.lock:
            pod = next((p for p in self.fake.pods if p["metadata"]["namespace"] == ns and p["metadata"]["name"] == name), None)
        if pod is None:
            return self._send(404, status(404, "NotFound", f'pods "{name}" not found'))
        containers = [c["name"] for c in pod["spec"]["containers"]]
        container = (call.query.get("container") or [containers[0]])[0]
        if container not in containers:
            return self._send(400, status(400, "BadRequest", f"container {container} is not valid for pod {name}"))
        offered = [p.strip() for p in self.headers.get("Sec-WebSocket-Protocol", "").split(",")]
        proto = next((p for p in ("v5.channel.k8s.io", "v4.channel.k8s.io") if p in offered), None)
        if self.headers.get("Upgrade", "").lower() != "websocket" or proto is None:
            return self._send(400, status(400, "BadRequest", "exec needs a websocket upgrade with a channel protocol"))
        exec_call = ExecCall(ns, name, container, call.query.get("command", []))
        with self.fake.lock:
            self.fake.execs.append(exec_call)
        self._upgrade(proto)
        _ExecSession(self, exec_call).run(self.fake.exec_handler(exec_call))
        self.close_connection = True

    def _upgrade(self, proto: str) -> None:
        key = self.headers["Sec-WebSocket-Key"]
        accept = base64.b64encode(hashlib.sha1((key + WS_GUID).encode()).digest()).decode()
        self.send_response(101, "Switching Protocols")
        self.send_header("Upgrade", "websocket")
        self.send_header("Connection", "Upgrade")
        self.send_header("Sec-WebSocket-Accept", accept)
        self.send_header("Sec-WebSocket-Protocol", proto)
        self.end_headers()
        self.wfile.flush()


class _ExecSession:
    """The websocket side of one exec: send the channels, or hang until the client leaves."""

    def __init__(self, handler: _Handler, call: ExecCall) -> None:
        self.handler = handler
        self.call = call
        self.ws = Connection(ConnectionType.SERVER)

    def _write(self, data: bytes) -> None:
        self.handler.wfile.write(data)
        self.handler.wfile.flush()

    def _message(self, channel: int, payload: bytes) -> None:
        self._write(self.ws.send(BytesMessage(data=bytes([channel]) + payload)))

    def run(self, reply: ExecReply) -> None:
        if reply.hang:
            self._until_client_closes()
            self.call.abandoned.set()
            return
        if reply.stdout:
            self._message(1, reply.stdout.encode())
        if reply.stderr:
            self._message(2, reply.stderr.encode())
        self._message(3, json.dumps(_exec_status(reply.exit_code)).encode())
        self._write(self.ws.send(CloseConnection(code=1000)))
        self._until_client_closes()

    def _until_client_closes(self) -> None:
        """Answer pings and read until the client's close frame or EOF."""
        self.handler.connection.settimeout(30)
        while True:
            try:
                data = self.handler.rfile.read1(65536)
            except OSError:
                return
            if not data:
                return
            self.ws.receive_data(data)
            for event in self.ws.events():
                if isinstance(event, Ping):
                    self._write(self.ws.send(event.response()))
                elif isinstance(event, CloseConnection):
                    try:
                        self._write(self.ws.send(event.response()))
                    except Exception:  # noqa: BLE001 - already closing; the client may be gone
                        pass
                    return


def _flux_route(parts: list[str]) -> tuple[str, str | None, str | None] | None:
    """Return (kind, namespace, name) for a Flux path, None for anything else."""
    if len(parts) < 4 or parts[0] != "apis":
        return None
    group, version, rest = parts[1], parts[2], parts[3:]
    if len(rest) == 1:
        ns, plural, name = None, rest[0], None
    elif len(rest) in (3, 4) and rest[0] == "namespaces":
        ns, plural, name = rest[1], rest[2], (rest[3] if len(rest) == 4 else None)
    else:
        return None
    kind = FLUX.get((group, version, plural))
    return None if kind is None else (kind, ns, name)


def _exec_status(exit_code: int) -> dict:
    if exit_code == 0:
        return {"metadata": {}, "status": "Success"}
    return {
        "metadata": {},
        "status": "Failure",
        "message": f"command terminated with non-zero exit code: error executing command, exit status {exit_code}",
        "reason": "NonZeroExitCode",
        "details": {"causes": [{"reason": "ExitCode", "message": str(exit_code)}]},
    }
