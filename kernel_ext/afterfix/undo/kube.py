"""Cluster access for undo: the official `kubernetes` client, the user's kubeconfig or in-cluster
config, fieldManager `afterfix`, and errors that say what went wrong and what to do.

    cluster = connect(kubeconfig=None, context=None)
    obj = cluster.get("apps/v1", "Deployment", "shop", "payments")
    cluster.patch("apps/v1", "Deployment", "shop", "payments", patch, dry_run=True)

Requests go through the client's own `ApiClient` (its configuration, authentication, TLS and
proxy handling), addressed by REST path, so one code path serves every kind below. Errors:

    ClusterError            anything the API answered that is not success
     ├─ ClusterUnreachable  no answer at all (wrong server, network, no kubeconfig)
     ├─ Forbidden           403: names the verb and resource the account lacks
     ├─ NotFound            404
     ├─ Conflict            409: someone wrote between our read and our write
     └─ Rejected            400/422 and other refusals (validation, admission, bad patch)
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from afterfix._exceptions import AfterfixError

__all__ = ["FIELD_MANAGER", "KINDS", "KindInfo", "Cluster", "connect", "kind_info", "ClusterError",
           "ClusterUnreachable", "Forbidden", "NotFound", "Conflict", "Rejected", "UnknownKind"]

FIELD_MANAGER = "afterfix"
STRATEGIC = "application/strategic-merge-patch+json"
MERGE = "application/merge-patch+json"
TIMEOUT_S = 15.0


@dataclass(frozen=True)
class KindInfo:
    api_version: str
    kind: str
    plural: str
    namespaced: bool = True

    @property
    def group(self) -> str:
        return self.api_version.split("/")[0] if "/" in self.api_version else ""

    def path(self, namespace: str | None, name: str | None = None) -> str:
        base = f"/apis/{self.api_version}" if self.group else "/api/v1"
        ns = f"/namespaces/{namespace}" if self.namespaced and namespace else ""
        return f"{base}{ns}/{self.plural}" + (f"/{name}" if name else "")


# The kinds whose changes afterfix can plan and undo (built-in kinds: strategic merge patches apply).
KINDS: dict[str, KindInfo] = {k.kind: k for k in [
    KindInfo("apps/v1", "Deployment", "deployments"),
    KindInfo("apps/v1", "StatefulSet", "statefulsets"),
    KindInfo("apps/v1", "DaemonSet", "daemonsets"),
    KindInfo("apps/v1", "ReplicaSet", "replicasets"),
    KindInfo("autoscaling/v2", "HorizontalPodAutoscaler", "horizontalpodautoscalers"),
    KindInfo("v1", "ConfigMap", "configmaps"),
    KindInfo("v1", "Secret", "secrets"),
    KindInfo("v1", "Service", "services"),
    KindInfo("v1", "Pod", "pods"),
    KindInfo("batch/v1", "Job", "jobs"),
    KindInfo("batch/v1", "CronJob", "cronjobs"),
    KindInfo("v1", "Namespace", "namespaces", namespaced=False),
]}


class ClusterError(AfterfixError):
    """The API server refused or failed a request; `status` is the HTTP status (0: no answer)."""

    def __init__(self, message: str, status: int = 0, reason: str = "", body: dict | None = None):
        super().__init__(message)
        self.status, self.reason, self.body = status, reason, body or {}


class ClusterUnreachable(ClusterError):
    pass


class Forbidden(ClusterError):
    def __init__(self, message: str, verb: str, resource: str, namespace: str | None, **kw):
        super().__init__(message, **kw)
        self.verb, self.resource, self.namespace = verb, resource, namespace


class NotFound(ClusterError):
    pass


class Conflict(ClusterError):
    pass


class Rejected(ClusterError):
    pass


class UnknownKind(AfterfixError):
    pass


def kind_info(kind: str | None, api_version: str | None = None) -> KindInfo:
    info = KINDS.get(kind or "")
    if info is None:
        raise UnknownKind(f"kind {kind!r} is not one afterfix can undo; it knows {', '.join(sorted(KINDS))}. "
                          "Undo this change by hand (kubectl edit) and record why.")
    return info


class Cluster:
    """One cluster, through one `kubernetes.client.ApiClient`."""

    def __init__(self, api_client, *, server: str = "", context: str | None = None,
                 field_manager: str = FIELD_MANAGER):
        self.api = api_client
        self.server = server or getattr(api_client.configuration, "host", "")
        self.context = context
        self.field_manager = field_manager

    def __repr__(self) -> str:
        return f"Cluster({self.server!r}, context={self.context!r})"

    def close(self) -> None:
        self.api.close()

    # -- verbs ---------------------------------------------------------------------------------
    def get(self, api_version: str | None, kind: str, namespace: str | None, name: str) -> dict:
        info = kind_info(kind, api_version)
        return self._call("GET", info.path(namespace, name), verb="get", info=info, namespace=namespace, name=name)

    def list(self, api_version: str | None, kind: str, namespace: str | None,
             label_selector: str | None = None) -> list[dict]:
        info = kind_info(kind, api_version)
        query = [("labelSelector", label_selector)] if label_selector else []
        out = self._call("GET", info.path(namespace), query, verb="list", info=info, namespace=namespace)
        return list(out.get("items") or [])

    def patch(self, api_version: str | None, kind: str, namespace: str | None, name: str, body: Any, *,
              dry_run: bool = False, content_type: str = STRATEGIC) -> dict:
        info = kind_info(kind, api_version)
        query = [("fieldManager", self.field_manager)] + ([("dryRun", "All")] if dry_run else [])
        return self._call("PATCH", info.path(namespace, name), query, body, content_type=content_type,
                          verb="patch", info=info, namespace=namespace, name=name)

    def delete(self, api_version: str | None, kind: str, namespace: str | None, name: str, *,
               uid: str | None = None, resource_version: str | None = None, dry_run: bool = False) -> dict:
        info = kind_info(kind, api_version)
        body: dict[str, Any] = {"kind": "DeleteOptions", "apiVersion": "v1",
                                "preconditions": {k: v for k, v in (("uid", uid), ("resourceVersion", resource_version)) if v}}
        if dry_run:
            body["dryRun"] = ["All"]
        query = [("dryRun", "All")] if dry_run else []
        return self._call("DELETE", info.path(namespace, name), query, body, content_type="application/json",
                          verb="delete", info=info, namespace=namespace, name=name)

    # -- plumbing ------------------------------------------------------------------------------
    def _call(self, method: str, path: str, query: list | None = None, body: Any = None, *,
              content_type: str | None = None, verb: str, info: KindInfo, namespace: str | None,
              name: str | None = None) -> dict:
        headers = {"Accept": "application/json"}
        if content_type:
            headers["Content-Type"] = content_type
        try:
            params = self.api.param_serialize(method=method, resource_path=path, query_params=query or [],
                                              header_params=headers, body=body, auth_settings=["BearerToken"])
            response = self.api.call_api(*params, _request_timeout=TIMEOUT_S)
            response.read()
        except Exception as e:  # urllib3's errors for refused connections, DNS, TLS, timeouts
            if type(e).__module__.startswith(("urllib3", "kubernetes")) or isinstance(e, OSError):
                raise ClusterUnreachable(
                    f"cannot reach the Kubernetes API at {self.server} ({_first_line(e)}); check the kubeconfig's "
                    f"server and context (--kubeconfig, --context, $KUBECONFIG) and that the cluster is up") from None
            raise
        text = response.data.decode("utf-8", "replace") if isinstance(response.data, bytes) else (response.data or "")
        try:
            data = json.loads(text) if text else {}
        except ValueError:
            data = {"message": text[:300]}
        if 200 <= response.status < 300:
            return data
        raise _error(response.status, data, verb, info, namespace, name)


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return (text[0] if text else type(e).__name__)[:200]


def _error(status: int, body: dict, verb: str, info: KindInfo, namespace: str | None, name: str | None) -> ClusterError:
    message = str(body.get("message") or f"HTTP {status}")
    reason = str(body.get("reason") or "")
    what = f"{info.plural}{'.' + info.group if info.group else ''}" + (f' "{name}"' if name else "")
    where = f" in namespace {namespace}" if namespace else ""
    kw = {"status": status, "reason": reason, "body": body}
    if status == 403:
        return Forbidden(f"the account may not {verb} {info.plural} (API group {info.group or 'core'!r}){where}: "
                         f"{message}. Ask for a Role granting verb {verb!r} on resource {info.plural!r}{where}, "
                         f"or use a kubeconfig context that has it", verb, info.plural, namespace, **kw)
    if status == 401:
        return Forbidden(f"the cluster did not accept the kubeconfig's credentials (401 Unauthorized: {message}); "
                         "refresh them (log in again) or choose another --context", verb, info.plural, namespace, **kw)
    if status == 404:
        return NotFound(f"{what} not found{where}: {message}", **kw)
    if status == 409:
        return Conflict(f"{what}{where} changed while afterfix was writing it (409 {reason}): {message}", **kw)
    return Rejected(f"the API server refused to {verb} {what}{where} ({status} {reason}): {message}", **kw)


def connect(kubeconfig: str | os.PathLike | None = None, context: str | None = None) -> Cluster:
    """A Cluster from `kubeconfig` (else $KUBECONFIG, else ~/.kube/config) and `context` (else the
    current one); inside a pod with no kubeconfig, the pod's service account (in-cluster config)."""
    from kubernetes import client, config

    path = kubeconfig or os.environ.get("KUBECONFIG") or None
    default = Path("~/.kube/config").expanduser()
    in_cluster = path is None and not default.exists() and os.environ.get("KUBERNETES_SERVICE_HOST")
    try:
        if in_cluster:
            configuration = client.Configuration()
            config.load_incluster_config(client_configuration=configuration)
            return Cluster(client.ApiClient(configuration), context="in-cluster")
        if path is None and not default.exists():
            raise ClusterUnreachable("no kubeconfig: pass --kubeconfig PATH, set $KUBECONFIG, or run inside a pod "
                                     "with a service account (in-cluster config)")
        files = str(path) if path else str(default)
        for one in files.split(os.pathsep):
            if one and not Path(one).expanduser().exists():
                raise ClusterUnreachable(f"kubeconfig {one} does not exist: pass --kubeconfig PATH or fix $KUBECONFIG")
        api = config.new_client_from_config(config_file=files, context=context, persist_config=False)
    except config.ConfigException as e:
        raise ClusterUnreachable(f"cannot use the kubeconfig {path or default}"
                                 f"{' context ' + repr(context) if context else ''}: {_first_line(e)}; "
                                 "list the contexts with `kubectl config get-contexts`") from None
    return Cluster(api, context=context)
