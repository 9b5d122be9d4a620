"""Who may do what on the Kubernetes API simulator: bearer tokens name users, and each user holds
rules shaped like RBAC PolicyRules (apiGroups, resources, verbs, resourceNames), optionally limited
to namespaces, as a Role bound in each of them would be.

    users:
      reviewer:
        token: reviewer-token
        rules:
          - apiGroups: ["", apps]
            resources: [pods, deployments, deployments/scale]   # "*", "*/scale" work as in RBAC
            verbs: [get, list, watch]
            namespaces: [shop]       # left out: every namespace and the cluster scope
            resourceNames: [web]     # left out: every object

Matching follows Kubernetes' RBAC authorizer: a rule allows a request when the verb, the API
group, the resource (with "/subresource"), the name (when resourceNames are given: never for
create, list, watch or deletecollection, which carry no name) and the namespace all match; any one
rule allowing is enough, nothing denies. A rule limited to namespaces never covers a cluster-scoped
request, nor a list across all namespaces. Requests without a bearer token act as
"system:anonymous"; an unknown token is 401 Unauthorized; a refusal is 403 Forbidden with the
message and `details` the API server sends (`forbidden`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping

from afterfix._exceptions import ConfigError
from afterfix.nightshift.cluster import ApiError

__all__ = ["Authorizer", "User", "Rule", "AuthError", "load_authorizer", "forbidden", "unauthorized",
           "request_attributes", "VERBS", "ANONYMOUS"]

VERBS = ("get", "list", "watch", "create", "update", "patch", "delete", "deletecollection")
ANONYMOUS = "system:anonymous"
_RULE_KEYS = ("apiGroups", "resources", "verbs", "resourceNames", "namespaces")
_USER_KEYS = ("token", "rules")
_NAMESPACE_SUBRESOURCES = ("status", "finalize")
_METHOD_VERBS = {"POST": "create", "PUT": "update", "PATCH": "patch"}


class AuthError(ApiError):
    """A request refused before it reached the cluster: 401 (no such token) or 403 (the user's
    rules do not allow it). Its Status leaves out empty `details`, as the API server's does."""

    def to_status(self) -> dict:
        status = super().to_status()
        if not self.details:
            del status["details"]
        return status


def unauthorized() -> AuthError:
    """What the API server answers a bearer token it does not know."""
    return AuthError(401, "Unauthorized", "Unauthorized")


def forbidden(user: str, verb: str, group: str, resource: str, subresource: str | None = None,
              namespace: str | None = None, name: str | None = None) -> AuthError:
    """The API server's 403 for this request, word for word: e.g. `deployments.apps "web" is
    forbidden: User "reviewer" cannot patch resource "deployments" in API group "apps" in the
    namespace "shop"`; `details` holds name, group and kind (the resource), the empty ones left out."""
    shown = f"{resource}/{subresource}" if subresource else resource
    where = f'in the namespace "{namespace}"' if namespace else "at the cluster scope"
    reason = f'User "{user}" cannot {verb} resource "{shown}" in API group "{group}" {where}'
    qualified = f"{resource}.{group}" if group else resource
    message = f'{qualified} "{name}" is forbidden: {reason}' if name else f"{qualified} is forbidden: {reason}"
    details = {k: v for k, v in (("name", name), ("group", group), ("kind", resource)) if v}
    return AuthError(403, "Forbidden", message, details)


def request_attributes(method: str, group: str, rest: str, *, watch: bool = False) -> dict:
    """What the API server's request-info resolver makes of a resource request: `rest` is the path
    after /api/v1/ or /apis/GROUP/VERSION/. Returns verb, group, resource, subresource, namespace
    and name, as `Authorizer.check` takes them. A named namespace is its own namespace
    (GET /api/v1/namespaces/shop is in the namespace "shop")."""
    parts = rest.strip("/").split("/")
    namespace = None
    if parts[0] == "namespaces" and len(parts) > 1:
        namespace = parts[1]
        if len(parts) > 2 and parts[2] not in _NAMESPACE_SUBRESOURCES:
            parts = parts[2:]
    name = parts[1] if len(parts) > 1 else None
    if watch and method == "GET":
        verb = "watch"
    elif method == "GET":
        verb = "get" if name else "list"
    elif method == "DELETE":
        verb = "delete" if name else "deletecollection"
    else:
        verb = _METHOD_VERBS.get(method, method.lower())
    return {"verb": verb, "group": group, "resource": parts[0], "subresource": "/".join(parts[2:]) or None,
            "namespace": namespace, "name": name}


@dataclass(frozen=True)
class Rule:
    """One PolicyRule; `namespaces` None means everywhere (a ClusterRoleBinding), a tuple means
    only namespaced requests in those namespaces (a RoleBinding in each)."""

    verbs: tuple[str, ...]
    api_groups: tuple[str, ...]
    resources: tuple[str, ...]
    resource_names: tuple[str, ...] = ()
    namespaces: tuple[str, ...] | None = None

    def allows(self, verb: str, group: str, resource: str, subresource: str | None = None,
               namespace: str | None = None, name: str | None = None) -> bool:
        if self.namespaces is not None and (not namespace or namespace not in self.namespaces):
            return False
        if "*" not in self.verbs and verb not in self.verbs:
            return False
        if "*" not in self.api_groups and group not in self.api_groups:
            return False
        combined = f"{resource}/{subresource}" if subresource else resource
        if not any(r == "*" or r == combined or (subresource and r == f"*/{subresource}") for r in self.resources):
            return False
        return not self.resource_names or (bool(name) and name in self.resource_names)


@dataclass(frozen=True)
class User:
    name: str
    token: str
    rules: tuple[Rule, ...] = ()


class Authorizer:
    """Bearer tokens to users, and users' rules to yes or no."""

    def __init__(self, users: Iterable[User]):
        self.users: dict[str, User] = {}
        self._by_token: dict[str, User] = {}
        for user in users:
            if user.name in self.users:
                raise ConfigError(f"user {user.name!r} is given twice; keep one")
            if user.token in self._by_token:
                raise ConfigError(f"users {self._by_token[user.token].name!r} and {user.name!r} have the same token; "
                                  "give each its own")
            self.users[user.name] = user
            self._by_token[user.token] = user

    @classmethod
    def from_dict(cls, data: Any, *, source: str = "the authorization policy") -> "Authorizer":
        """An Authorizer from `{"users": {NAME: {"token": ..., "rules": [...]}}}` (the module
        docstring's shape), every field checked; ConfigError names `source` and the field."""
        return _Reader(source).authorizer(data)

    def authenticate(self, authorization: str | None) -> str:
        """The user an `Authorization` header names: no bearer token is "system:anonymous", an
        unknown one raises `unauthorized()`."""
        scheme, _, token = (authorization or "").strip().partition(" ")
        if scheme.lower() != "bearer":
            return ANONYMOUS
        user = self._by_token.get(token.strip())
        if user is None:
            raise unauthorized()
        return user.name

    def allow(self, user: str, verb: str, group: str, resource: str, subresource: str | None = None,
              namespace: str | None = None, name: str | None = None) -> bool:
        """Whether any of `user`'s rules allows the request (unknown users have none)."""
        held = self.users.get(user)
        return held is not None and any(r.allows(verb, group, resource, subresource, namespace, name)
                                        for r in held.rules)

    def check(self, user: str, verb: str, group: str, resource: str, subresource: str | None = None,
              namespace: str | None = None, name: str | None = None) -> None:
        """`allow`, or raise the API server's 403 (`forbidden`)."""
        if not self.allow(user, verb, group, resource, subresource, namespace, name):
            raise forbidden(user, verb, group, resource, subresource, namespace, name)

    def token_of(self, user: str) -> str:
        if user not in self.users:
            raise ConfigError(f"user {user!r} is not in the authorization policy; it has "
                              + (", ".join(sorted(self.users)) or "no users"))
        return self.users[user].token


def load_authorizer(path: str | os.PathLike) -> Authorizer:
    """The Authorizer of the YAML file at `path`; ConfigError names the file, the line and the field."""
    import yaml

    shown = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as e:
        raise ConfigError(f"{shown}: cannot be read ({e.strerror}); give the path of an authorization "
                          "policy (users: NAME: {token, rules})") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{shown}: is not UTF-8 text; save it as UTF-8") from None
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        raise ConfigError(f"{shown}{f' line {mark.line + 1}' if mark else ''}: is not valid YAML "
                          f"({getattr(e, 'problem', None) or e}); fix the YAML there") from None
    reader = _Reader(shown)
    return reader.authorizer(reader.plain(root, ()) if root is not None else None)


class _Reader:
    """Checks a policy's plain values; from YAML nodes it keeps each path's line for the errors."""

    def __init__(self, source: str):
        self.source = source
        self.lines: dict[tuple, int] = {}

    def fail(self, at: tuple, problem: str):
        line = self.lines.get(at)
        field = ".".join(str(p) for p in at)
        raise ConfigError(f"{self.source}{f' line {line}' if line else ''}{f' {field}' if field else ''}: {problem}")

    def plain(self, node: Any, at: tuple) -> Any:
        import yaml

        self.lines.setdefault(at, node.start_mark.line + 1)
        if isinstance(node, yaml.MappingNode):
            out: dict = {}
            for key_node, value_node in node.value:
                key = key_node.value if isinstance(key_node, yaml.ScalarNode) else None
                self.lines[at + (key,)] = key_node.start_mark.line + 1
                if not isinstance(key, str) or key in out or key_node.tag == "tag:yaml.org,2002:merge":
                    self.fail(at + (key,), "must be a plain key given once (no merge keys)")
                out[key] = self.plain(value_node, at + (key,))
            return out
        if isinstance(node, yaml.SequenceNode):
            return [self.plain(item, at + (i,)) for i, item in enumerate(node.value)]
        return yaml.SafeLoader("").construct_object(node, deep=True)

    def known(self, data: Mapping, keys: tuple[str, ...], at: tuple) -> None:
        for key in data:
            if key not in keys:
                self.fail(at + (key,), f"is not a field here; the fields are {', '.join(keys)}")

    def strings(self, rule: Mapping, at: tuple, key: str, *, required: bool, allowed: tuple[str, ...] = ()):
        value = rule.get(key)
        if value is None and not required:
            return None
        if not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value):
            self.fail(at + (key,) if key in rule else at, f"{key} must be a list of strings, at least one"
                      + (" (use [\"\"] for the core group)" if key == "apiGroups" else ""))
        for i, v in enumerate(value):
            if allowed and v not in allowed:
                self.fail(at + (key, i), f"{v!r} is not a verb the simulator serves; use {', '.join(allowed)} or *")
            if not v and key != "apiGroups":
                self.fail(at + (key, i), "is empty; name one, or * for all")
        return tuple(value)

    def authorizer(self, data: Any) -> Authorizer:
        if not isinstance(data, dict) or not isinstance(data.get("users"), dict) or not data["users"]:
            self.fail((), "must be a mapping users: {NAME: {token: ..., rules: [...]}} with at least one user")
        self.known(data, ("users",), ())
        users = []
        for name, spec in data["users"].items():
            at = ("users", name)
            if not isinstance(name, str) or not name.strip():
                self.fail(at, "a user's name must be a non-empty string")
            if not isinstance(spec, dict):
                self.fail(at, "must be a mapping with token and rules")
            self.known(spec, _USER_KEYS, at)
            token = spec.get("token")
            if not isinstance(token, str) or not token.strip() or token != token.strip() or " " in token:
                self.fail(at + ("token",) if "token" in spec else at, "token must be a non-empty string without spaces")
            rules = spec.get("rules", [])
            if not isinstance(rules, list):
                self.fail(at + ("rules",), "must be a list of rules (apiGroups, resources, verbs)")
            users.append(User(name, token, tuple(self.rule(r, at + ("rules", i)) for i, r in enumerate(rules))))
        try:
            return Authorizer(users)
        except ConfigError as e:
            raise ConfigError(f"{self.source}: {e}") from None

    def rule(self, rule: Any, at: tuple) -> Rule:
        if not isinstance(rule, dict):
            self.fail(at, "must be a mapping with apiGroups, resources and verbs")
        if "nonResourceURLs" in rule:
            self.fail(at + ("nonResourceURLs",), "is not needed: discovery, /version, /healthz and /metrics are open")
        self.known(rule, _RULE_KEYS, at)
        namespaces = self.strings(rule, at, "namespaces", required=False)
        return Rule(verbs=self.strings(rule, at, "verbs", required=True, allowed=VERBS + ("*",)),
                    api_groups=self.strings(rule, at, "apiGroups", required=True),
                    resources=self.strings(rule, at, "resources", required=True),
                    resource_names=self.strings(rule, at, "resourceNames", required=False) or (),
                    namespaces=None if "*" in (namespaces or ("*",)) else namespaces)
