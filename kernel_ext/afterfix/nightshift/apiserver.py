"""The Kubernetes API simulator's HTTP side: the REST paths, verbs and content types the product
uses, served on 127.0.0.1 so that the official `kubernetes` Python client works against it
unchanged.

This is a simulator. No real Kubernetes API server can run on the machines afterfix is built and
tested on; this one keeps the protocol (paths, `Status` errors, patch content types, `dryRun`,
`fieldManager`, label/field selectors, the `scale` and `status` subresources, discovery) and the
semantics in `cluster.py`, server-side apply and watch included. Not served: protobuf, pagination
(`limit` returns everything).
It also serves `/metrics` (Prometheus text format) with the simulated workloads' metrics, and
`/sim/history?namespace=NS&deployment=NAME` (JSON) with their per-minute history, and
metrics.k8s.io/v1beta1 PodMetrics (what `kubectl top pod` reads).

Authorization is optional: without an `Authorizer` every request is allowed; with one
(`authz.py`), bearer tokens name users, RBAC-like rules decide every resource request (dry runs
as the writes they stand for), and refusals are the API server's 401 and 403 Status objects.
Discovery, /version, /healthz, /metrics and /sim/history stay open to every caller.

kubectl works for get (server-side Tables), describe, patch, scale, set image, rollout
history/undo/restart/status, delete and `apply --validate=false` (no OpenAPI documents are served);
its `create <kind>` generators send protobuf and get 415: use `apply -f` for those.
"""

from __future__ import annotations

import json
import os
import re
import signal
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from afterfix._exceptions import ConfigError
from afterfix.nightshift import tables
from afterfix.nightshift.authz import Authorizer, request_attributes
from afterfix.nightshift.clock import SimClock
from afterfix.nightshift.cluster import KINDS, ApiError, Cluster

__all__ = ["ApiServer", "serve_cluster", "KUBE_VERSION"]

KUBE_VERSION = {"major": "1", "minor": "34", "gitVersion": "v1.34.0+afterfix-sim", "gitCommit": "",
                "gitTreeState": "clean", "buildDate": "2026-11-01T00:00:00Z", "goVersion": "n/a",
                "compiler": "n/a", "platform": "linux/amd64"}
PATCH_TYPES = {"application/merge-patch+json": "merge", "application/strategic-merge-patch+json": "strategic",
               "application/json-patch+json": "json"}
APPLY_TYPE = "application/apply-patch+yaml"
BY_PLURAL = {(k.api_version, k.plural): k for k in KINDS.values()}
_VERBS = ["create", "delete", "get", "list", "patch", "update"]
METRICS_GROUP, METRICS_VERSION = "metrics.k8s.io", "metrics.k8s.io/v1beta1"
_POD_METRICS = re.compile(r"/apis/metrics\.k8s\.io/v1beta1(?:/namespaces/([^/]+))?/pods(?:/([^/]+))?")
SHORT_NAMES = {"Namespace": ["ns"], "Pod": ["po"], "ConfigMap": ["cm"], "Event": ["ev"], "Deployment": ["deploy"],
               "ReplicaSet": ["rs"], "HorizontalPodAutoscaler": ["hpa"]}


def _resource_list(api_version: str) -> dict:
    if api_version == METRICS_VERSION:
        return {"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": api_version, "resources": [
            {"name": "pods", "singularName": "", "namespaced": True, "kind": "PodMetrics", "verbs": ["get", "list"]}]}
    resources = []
    for k in KINDS.values():
        if k.api_version != api_version:
            continue
        resources.append({"name": k.plural, "singularName": k.kind.lower(), "namespaced": k.namespaced,
                          "kind": k.kind, "verbs": _VERBS + ["watch"], "shortNames": SHORT_NAMES.get(k.kind, []),
                          **({"categories": ["all"]} if k.kind in ("Pod", "Deployment", "ReplicaSet",
                                                                  "HorizontalPodAutoscaler", "Job") else {})})
        if k.has_status:
            resources.append({"name": f"{k.plural}/status", "singularName": "", "namespaced": k.namespaced,
                              "kind": k.kind, "verbs": ["get", "patch", "update"]})
        if k.kind == "Deployment":
            resources.append({"name": "deployments/scale", "singularName": "", "namespaced": True,
                              "group": "autoscaling", "version": "v1", "kind": "Scale",
                              "verbs": ["get", "patch", "update"]})
    return {"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": api_version, "resources": resources}


def _groups() -> dict:
    groups: dict[str, list[str]] = {}
    for k in KINDS.values():
        if k.group:
            groups.setdefault(k.group, [])
            if k.api_version not in groups[k.group]:
                groups[k.group].append(k.api_version)
    groups[METRICS_GROUP] = [METRICS_VERSION]
    return {"kind": "APIGroupList", "apiVersion": "v1", "groups": [
        {"name": g, "versions": [{"groupVersion": v, "version": v.split("/")[1]} for v in vs],
         "preferredVersion": {"groupVersion": vs[0], "version": vs[0].split("/")[1]}} for g, vs in groups.items()]}


class _Handler(BaseHTTPRequestHandler):
    server: "_Server"
    protocol_version = "HTTP/1.1"
    # Headers and body leave in two writes; with Nagle's algorithm each kept-alive answer would
    # wait for the client's delayed ACK (~40 ms).
    disable_nagle_algorithm = True

    def log_message(self, fmt: str, *args: Any) -> None:  # quiet: tests and the demo read the API, not logs
        pass

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_PUT(self) -> None:
        self._dispatch("PUT")

    def do_PATCH(self) -> None:
        self._dispatch("PATCH")

    def do_DELETE(self) -> None:
        self._dispatch("DELETE")

    # ---- plumbing ---------------------------------------------------------------------------
    def _send(self, code: int, body: Any, content_type: str = "application/json") -> None:
        data = body if isinstance(body, bytes) else (body.encode() if isinstance(body, str)
                                                      else json.dumps(body).encode())
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _body(self) -> Any:
        raw = self._raw_body
        content_type = (self.headers.get("Content-Type") or "").split(";")[0].strip()
        if raw and content_type in ("application/vnd.kubernetes.protobuf", "application/cbor"):
            raise ApiError(415, "UnsupportedMediaType", f"the body of the request was in an unknown format - accepted "
                           f"media types include: application/json (this simulator does not speak {content_type})")
        if not raw:
            return None
        try:
            return json.loads(raw)
        except ValueError as e:
            raise ApiError(400, "BadRequest", f"request body is not JSON ({e}); this simulator accepts JSON only") from None

    def _yaml_body(self) -> Any:
        import yaml

        try:
            return yaml.safe_load(self._raw_body) if self._raw_body else None
        except yaml.YAMLError as e:
            raise ApiError(400, "BadRequest", f"the apply patch is not YAML or JSON: {e}") from None

    def _dispatch(self, method: str) -> None:
        # Read the whole body first: an error answered before reading it would leave it in the
        # kept-alive connection, to be misread as the next request.
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            length = 0
        self._raw_body = self.rfile.read(length) if length > 0 else b""
        url = urlsplit(self.path)
        url = url._replace(path=url.path.rstrip("/") or "/")
        query = {k: v[-1] for k, v in parse_qs(url.query).items()}
        try:
            if method == "GET" and url.path in ("/healthz", "/readyz", "/livez"):
                return self._send(200, "ok", "text/plain")
            if method == "GET" and url.path == "/metrics":
                with self.server.cluster.lock:
                    text = self.server.cluster.workloads.prometheus_text()
                return self._send(200, text, "text/plain; version=0.0.4; charset=utf-8")
            if method == "GET" and url.path == "/sim/history":
                if not query.get("namespace") or not query.get("deployment"):
                    raise ApiError(400, "BadRequest", "/sim/history needs ?namespace=NS&deployment=NAME[&since=EPOCH]")
                try:
                    since = float(query["since"]) if query.get("since") else None
                except ValueError:
                    raise ApiError(400, "BadRequest", f"since={query['since']!r} is not epoch seconds") from None
                return self._send(200, {"namespace": query["namespace"], "deployment": query["deployment"],
                                        "samples": self.server.cluster.workloads.history(
                                            query["namespace"], query["deployment"], since)})
            if method == "GET" and url.path == "/version":
                return self._send(200, KUBE_VERSION)
            if method == "GET" and url.path == "/api":
                return self._send(200, {"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": [
                    {"clientCIDR": "0.0.0.0/0", "serverAddress": f"{self.server.server_address[0]}:"
                                                                 f"{self.server.server_address[1]}"}]})
            if method == "GET" and url.path == "/apis":
                return self._send(200, _groups())
            self._authorize(method, url.path, query)
            m = _POD_METRICS.fullmatch(url.path)
            if m and method == "GET":
                return self._send(200, self._pod_metrics(m.group(1), m.group(2), query))
            m = re.fullmatch(r"/api/v1|/apis/([^/]+/[^/]+)", url.path)
            if method == "GET" and m:
                return self._send(200, _resource_list(m.group(1) or "v1"))
            code, body = self._resource(method, url.path, query)
            if code is not None:
                self._send(code, body)
        except ApiError as e:
            self._send(e.code, e.to_status())
        except Exception as e:  # a simulator bug must still answer as the API would
            self._send(500, ApiError(500, "InternalError", f"{type(e).__name__}: {e}").to_status())

    def _authorize(self, method: str, path: str, query: dict) -> None:
        """Authenticate and authorize a resource request as the API server would, before any
        lookup: a refused request learns nothing of whether the object exists. A dry-run write
        is authorized as the write itself."""
        authorizer = self.server.authorizer
        m = re.fullmatch(r"/api/v1/(.+)", path) or re.fullmatch(r"/apis/([^/]+)/[^/]+/(.+)", path)
        if authorizer is None or not m:
            return
        group, rest = ("", m.group(1)) if path.startswith("/api/v1/") else (m.group(1), m.group(2))
        user = authorizer.authenticate(self.headers.get("Authorization"))
        authorizer.check(user, **request_attributes(method, group, rest, watch=query.get("watch") in ("true", "1")))

    def _resource(self, method: str, path: str, query: dict) -> tuple[int, Any]:
        m = re.fullmatch(r"/api/v1/(.+)", path) or re.fullmatch(r"/apis/([^/]+/[^/]+)/(.+)", path)
        if not m:
            raise ApiError(404, "NotFound", f"the server could not find the requested resource ({path})")
        api_version, rest = ("v1", m.group(1)) if path.startswith("/api/v1/") else (m.group(1), m.group(2))
        parts = rest.strip("/").split("/")
        namespace = None
        if parts[0] == "namespaces" and len(parts) >= 3 and api_version == "v1" or \
                parts[0] == "namespaces" and len(parts) >= 3 and api_version != "v1":
            namespace, parts = parts[1], parts[2:]
        kind = BY_PLURAL.get((api_version, parts[0]))
        if kind is None or len(parts) > 3:
            raise ApiError(404, "NotFound", f"the server could not find the requested resource ({path}); "
                           "this simulator serves " + ", ".join(sorted(f"{a} {p}" for a, p in BY_PLURAL)))
        if kind.namespaced and namespace is None and len(parts) > 1:
            raise ApiError(404, "NotFound", f"{kind.plural} are namespaced: use .../namespaces/NS/{kind.plural}/NAME")
        name = parts[1] if len(parts) > 1 else None
        sub = parts[2] if len(parts) > 2 else None
        if sub not in (None, "status", "scale") or (sub == "scale" and kind.kind != "Deployment") \
                or (sub == "status" and not kind.has_status):
            raise ApiError(404, "NotFound", f"the server could not find the requested resource ({path})")
        dry_run = self._dry_run(query)
        manager = query.get("fieldManager") or self._default_manager()
        cluster = self.server.cluster
        if query.get("watch") in ("true", "1"):
            if method != "GET" or name is not None:
                raise ApiError(405, "MethodNotAllowed", "watch is served on collections: GET .../PLURAL?watch=true")
            self._watch(kind, namespace, query)
            return None, None
        with cluster.lock:
            if name is None:
                if method == "GET":
                    items = cluster.list(kind.api_version, kind.kind, namespace, query.get("labelSelector"),
                                         query.get("fieldSelector"))
                    if tables.wants_table(self.headers.get("Accept")) and kind.kind in tables.COLUMNS:
                        return 200, tables.table(kind.kind, items, cluster.clock.now(), cluster.resource_version)
                    return 200, {"kind": f"{kind.kind}List", "apiVersion": kind.api_version,
                                 "metadata": {"resourceVersion": cluster.resource_version}, "items": items}
                if method == "POST":
                    body = self._object(kind, namespace, None)
                    return 201, cluster.create(body, dry_run=dry_run, field_manager=manager)
                raise ApiError(405, "MethodNotAllowed", f"{method} is not allowed on a collection here")
            if sub == "scale":
                return 200, self._scale(method, kind, namespace, name, dry_run, manager)
            if method == "GET":
                obj = cluster.get(kind.api_version, kind.kind, namespace, name)
                if sub is None and tables.wants_table(self.headers.get("Accept")) and kind.kind in tables.COLUMNS:
                    return 200, tables.table(kind.kind, [obj], cluster.clock.now(), obj["metadata"]["resourceVersion"])
                return 200, obj
            if method == "PUT":
                body = self._object(kind, namespace, name)
                return 200, cluster.replace(body, dry_run=dry_run, field_manager=manager, subresource=sub)
            if method == "PATCH" and self._is_apply():
                body = self._object(kind, namespace, name, apply=True)
                force = query.get("force") in ("true", "1")
                return 200, cluster.apply(body, field_manager=query.get("fieldManager", ""), force=force, dry_run=dry_run)
            if method == "PATCH":
                return 200, cluster.patch(kind.api_version, kind.kind, namespace, name, self._body(),
                                          patch_type=self._patch_type(), dry_run=dry_run, field_manager=manager,
                                          subresource=sub)
            if method == "DELETE":
                options = self._body() or {}
                dry_run = dry_run or "All" in (options.get("dryRun") or [])
                return 200, cluster.delete(kind.api_version, kind.kind, namespace, name, dry_run=dry_run,
                                           preconditions=options.get("preconditions"))
        raise ApiError(405, "MethodNotAllowed", f"{method} is not allowed here")

    def _watch(self, kind, namespace: str | None, query: dict) -> None:
        """Stream watch events as chunked JSON lines until timeoutSeconds (default 60) or shutdown.
        Without resourceVersion the current objects come first as ADDED, as from the API server."""
        cluster = self.server.cluster
        try:
            timeout = min(float(query.get("timeoutSeconds") or 60), 600.0)
        except ValueError:
            raise ApiError(400, "BadRequest", f"timeoutSeconds={query.get('timeoutSeconds')!r} is not a number") from None
        labels, fields_ = query.get("labelSelector"), query.get("fieldSelector")
        with cluster.lock:
            if query.get("resourceVersion") not in (None, "", "0"):
                try:
                    since = int(query["resourceVersion"])
                except ValueError:
                    raise ApiError(400, "BadRequest", f"resourceVersion={query['resourceVersion']!r} is not valid") from None
                pending = cluster.changes_since(since, kind.kind, namespace, labels, fields_)
            else:
                since = int(cluster.resource_version)
                pending = [("ADDED", o) for o in cluster.list(kind.api_version, kind.kind, namespace, labels, fields_)]
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        deadline = time.monotonic() + timeout
        try:
            while True:
                for type_, obj in pending:
                    line = json.dumps({"type": type_, "object": obj}).encode() + b"\n"
                    self.wfile.write(b"%x\r\n%s\r\n" % (len(line), line))
                self.wfile.flush()
                left = deadline - time.monotonic()
                if left <= 0 or self.server.stopping:
                    break
                with cluster.lock:
                    cluster.changed.wait(min(left, 0.5))
                    try:
                        pending = cluster.changes_since(since, kind.kind, namespace, labels, fields_)
                    except ApiError as e:
                        pending = [("ERROR", e.to_status())]
                    since = int(cluster.resource_version)
                if pending and pending[0][0] == "ERROR":
                    line = json.dumps({"type": "ERROR", "object": pending[0][1]}).encode() + b"\n"
                    self.wfile.write(b"%x\r\n%s\r\n" % (len(line), line))
                    break
            self.wfile.write(b"0\r\n\r\n")
            self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError):
            pass  # the watcher went away
        self.close_connection = True

    def _pod_metrics(self, namespace: str | None, name: str | None, query: dict) -> dict:
        from afterfix.nightshift.cluster import parse_label_selector

        match = parse_label_selector(query.get("labelSelector"))
        items = [p for p in self.server.cluster.workloads.pod_metrics(namespace) if match(p["metadata"]["labels"])]
        if name is None:
            return {"kind": "PodMetricsList", "apiVersion": METRICS_VERSION, "metadata": {}, "items": items}
        for item in items:
            if item["metadata"]["name"] == name:
                return item
        raise ApiError(404, "NotFound", f'podmetrics.metrics.k8s.io "{name}" not found',
                       {"name": name, "group": METRICS_GROUP, "kind": "pods"})

    def _dry_run(self, query: dict) -> bool:
        value = query.get("dryRun")
        if value in (None, ""):
            return False
        if value != "All":
            raise ApiError(400, "BadRequest", f"dryRun={value!r} is not supported: the only valid value is 'All'")
        return True

    def _default_manager(self) -> str:
        # As the API server does: the user agent up to its first "/" (e.g. "OpenAPI-Generator").
        agent = self.headers.get("User-Agent") or "unknown"
        return agent.split("/")[0][:128] or "unknown"

    def _is_apply(self) -> bool:
        return (self.headers.get("Content-Type") or "").split(";")[0].strip() == APPLY_TYPE

    def _patch_type(self) -> str:
        content_type = (self.headers.get("Content-Type") or "").split(";")[0].strip()
        if content_type not in PATCH_TYPES:
            raise ApiError(415, "UnsupportedMediaType", f"the body of the request was in an unknown format - "
                           f"accepted media types include: {', '.join([*PATCH_TYPES, APPLY_TYPE])} (got {content_type!r})")
        return PATCH_TYPES[content_type]

    def _object(self, kind, namespace: str | None, name: str | None, apply: bool = False) -> dict:
        body = self._yaml_body() if apply else self._body()
        if not isinstance(body, dict):
            raise ApiError(400, "BadRequest", f"the request body must be a {kind.kind} object")
        body.setdefault("apiVersion", kind.api_version)
        body.setdefault("kind", kind.kind)
        if (body["apiVersion"], body["kind"]) != (kind.api_version, kind.kind):
            raise ApiError(400, "BadRequest", f"the body is a {body['apiVersion']} {body['kind']}, but the path is "
                           f"for {kind.api_version} {kind.kind}")
        meta = body.setdefault("metadata", {})
        if namespace is not None:
            if meta.get("namespace") not in (None, "", namespace):
                raise ApiError(400, "BadRequest", f"the namespace of the provided object ({meta['namespace']}) "
                               f"does not match the namespace sent on the request ({namespace})")
            meta["namespace"] = namespace
        if name is not None:
            if meta.get("name") not in (None, name):
                raise ApiError(400, "BadRequest", f"the name of the object ({meta['name']}) does not match the "
                               f"name on the URL ({name})")
            meta["name"] = name
        return body

    def _scale(self, method: str, kind, namespace: str, name: str, dry_run: bool, manager: str) -> dict:
        cluster = self.server.cluster
        deploy = cluster.get(kind.api_version, kind.kind, namespace, name)
        scale = _scale_of(deploy)
        if method == "GET":
            return scale
        if method == "PUT":
            wanted = self._body()
        elif method == "PATCH":
            patch_type = self._patch_type()
            from afterfix.nightshift import patches

            body = self._body()
            try:
                wanted = {"merge": patches.merge_patch, "strategic": patches.strategic_merge_patch,
                          "json": patches.json_patch}[patch_type](scale, body)
            except patches.PatchError as e:
                raise ApiError(422, "Invalid", f'Scale "{name}": cannot apply {patch_type} patch: {e}') from None
        else:
            raise ApiError(405, "MethodNotAllowed", f"{method} is not allowed on the scale subresource")
        if not isinstance(wanted, dict):
            raise ApiError(400, "BadRequest", "the body must be an autoscaling/v1 Scale")
        replicas = (wanted.get("spec") or {}).get("replicas")
        if not isinstance(replicas, int) or isinstance(replicas, bool) or replicas < 0:
            raise ApiError(422, "Invalid", f'Scale.autoscaling "{name}" is invalid: spec.replicas: Invalid value: '
                           f"{replicas!r}: must be greater than or equal to 0",
                           {"name": name, "group": "autoscaling", "kind": "Scale", "causes": [
                               {"reason": "FieldValueInvalid", "field": "spec.replicas", "message": "Invalid value"}]})
        rv = (wanted.get("metadata") or {}).get("resourceVersion")
        updated = cluster.patch(kind.api_version, kind.kind, namespace, name,
                                {"metadata": {"resourceVersion": rv} if rv else {}, "spec": {"replicas": replicas}},
                                patch_type="merge", dry_run=dry_run, field_manager=manager, subresource="scale")
        return _scale_of(updated)


def _scale_of(deploy: dict) -> dict:
    meta = deploy["metadata"]
    selector = ",".join(f"{k}={v}" for k, v in sorted((deploy["spec"]["selector"].get("matchLabels") or {}).items()))
    return {"kind": "Scale", "apiVersion": "autoscaling/v1",
            "metadata": {"name": meta["name"], "namespace": meta["namespace"], "uid": meta["uid"],
                         "resourceVersion": meta["resourceVersion"], "creationTimestamp": meta["creationTimestamp"]},
            "spec": {"replicas": deploy["spec"]["replicas"]},
            "status": {"replicas": deploy.get("status", {}).get("replicas", 0), "selector": selector}}


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    cluster: Cluster
    authorizer: Authorizer | None = None
    stopping = False


class ApiServer:
    """Serves one `Cluster` over HTTP on `host:port` (port 0 picks a free one) in a background thread;
    with an `authorizer` only what its users' rules allow (see `authz.py`)."""

    def __init__(self, cluster: Cluster, host: str = "127.0.0.1", port: int = 0, *,
                 authorizer: Authorizer | None = None):
        self.cluster = cluster
        self.authorizer = authorizer
        self.host, self.port = host, port
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self) -> "ApiServer":
        try:
            self._server = _Server((self.host, self.port), _Handler)
        except OSError as e:
            raise ConfigError(f"{self.host}:{self.port}: the Kubernetes API simulator cannot listen there "
                              f"({e.strerror}); choose another port (--port) or stop what holds it") from None
        self._server.cluster = self.cluster
        self._server.authorizer = self.authorizer
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                        name="afterfix-k8s-sim", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.stopping = True  # open watches end within half a second
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
        self.cluster.save()

    def __enter__(self) -> "ApiServer":
        return self.start() if self._server is None else self

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    def write_kubeconfig(self, path: Path | str, *, namespace: str = "default", token: str | None = None,
                         user: str | None = None) -> Path:
        """A kubeconfig whose current context points at this simulator (plain HTTP on loopback).
        `user` names a user of the authorizer: its token goes in, unless `token` is given."""
        if token is None and user is not None:
            if self.authorizer is None:
                raise ConfigError(f"write_kubeconfig(user={user!r}): this ApiServer has no authorizer, so users have "
                                  "no tokens; pass token=... or start it with ApiServer(cluster, authorizer=...)")
            token = self.authorizer.token_of(user)
        return write_kubeconfig(path, self.url, namespace=namespace, token=token or DEFAULT_TOKEN,
                                user=user or DEFAULT_USER)


DEFAULT_TOKEN = DEFAULT_USER = "afterfix-sim"


def write_kubeconfig(path: Path | str, server: str, *, namespace: str = "default", token: str = DEFAULT_TOKEN,
                     user: str = DEFAULT_USER) -> Path:
    """A kubeconfig with one context, afterfix-sim, for `server`, as `user` with bearer `token`."""
    import yaml

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    config = {
        "apiVersion": "v1", "kind": "Config", "current-context": "afterfix-sim", "preferences": {},
        "clusters": [{"name": "afterfix-sim", "cluster": {"server": server}}],
        "users": [{"name": user, "user": {"token": token}}],
        "contexts": [{"name": "afterfix-sim",
                      "context": {"cluster": "afterfix-sim", "user": user, "namespace": namespace}}],
    }
    # Written whole or not at all: whoever waits for the file may read it the moment it appears.
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(yaml.safe_dump(config, sort_keys=False))
    os.replace(tmp, path)
    return path


def serve_cluster(*, port: int, kubeconfig: Path, state_file: Path, host: str = "127.0.0.1",
                  realtime_factor: float = 60.0, seed: int = 0, ready: threading.Event | None = None,
                  stop: threading.Event | None = None) -> None:
    """Run the simulator until SIGINT/SIGTERM (or `stop` is set): load `state_file` if it exists,
    write `kubeconfig`, advance simulated time `realtime_factor` times faster than the wall clock,
    and save the state on the way out."""
    cluster = Cluster(SimClock(), state_file=Path(state_file), seed=seed)
    server = ApiServer(cluster, host=host, port=port).start()
    server.write_kubeconfig(kubeconfig)
    stop = stop or threading.Event()
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: stop.set())
    print(f"afterfix Kubernetes API simulator on {server.url} (kubeconfig {kubeconfig}, state {state_file}); "
          "Ctrl-C stops it", flush=True)
    if ready is not None:
        ready.set()
    last = time.monotonic()
    try:
        while not stop.wait(1.0):
            now = time.monotonic()
            if realtime_factor > 0:
                cluster.tick((now - last) * realtime_factor)
            last = now
    finally:
        server.stop()
