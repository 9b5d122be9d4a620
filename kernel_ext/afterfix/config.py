"""The `Afterfix` options of the IPython extension, as one traitlets Configurable.

Set them before loading (`c.Afterfix.port = 14501` in a profile, or
`get_ipython().config.Afterfix.port = 14501`), or after loading with `%config Afterfix.port = 14501`
followed by `%afterfix restart`. AFTERFIX_STORE, AFTERFIX_PORT, AFTERFIX_INBOX and AFTERFIX_TOKEN
give the defaults.
Each option is checked when it is set, and a bad value is refused with the option's name and the fix.
"""

from __future__ import annotations

import ipaddress
import os
import re
import warnings
from pathlib import Path

from traitlets import Bool, Float, Int, List, TraitError, Unicode, default, validate
from traitlets.config import Configurable

from ._exceptions import StoreError
from .locations import is_team_spec, team_location
from .store import default_store_spec

ENV_PORT = "AFTERFIX_PORT"
ENV_INBOX = "AFTERFIX_INBOX"
ENV_TOKEN = "AFTERFIX_TOKEN"
DEFAULT_PORT = 4318  # the OTLP/HTTP port every OpenTelemetry exporter sends to by default
DEFAULT_MAX_BODY_BYTES = 16 * 1024 * 1024

_LOOPBACK_NAMES = {"localhost", "ip6-localhost", "ip6-loopback"}


def is_loopback(host: str) -> bool:
    """True when `host` names this machine only (127.0.0.0/8, ::1, localhost)."""
    if host.lower() in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


class Afterfix(Configurable):
    """Where `%load_ext afterfix` stores traces, what it listens on, and how results are shown."""

    store = Unicode(
        help="Folder of the store the kernel reads and writes (default: $AFTERFIX_STORE, else traces/store).",
    ).tag(config=True)
    inbox = Unicode(
        help="Folder whose OTLP/JSON and protobuf files are tailed into the store "
        "(default: $AFTERFIX_INBOX, else the folder `inbox` beside the store).",
    ).tag(config=True)
    listen = Bool(True, help="Run the OTLP/HTTP receiver; False tails the inbox only.").tag(config=True)
    host = Unicode(
        "127.0.0.1", help="Address the receiver binds. Anything but loopback exposes it to the network."
    ).tag(config=True)
    port = Int(help="Port of the OTLP/HTTP receiver (default: $AFTERFIX_PORT, else 4318; 0 picks a free one).").tag(
        config=True
    )
    token = Unicode(
        None, allow_none=True,
        help="Bearer token senders must present (default: $AFTERFIX_TOKEN, else None: any local sender is accepted).",
    ).tag(config=True)
    max_body_bytes = Int(
        help="Largest OTLP/HTTP request body accepted; larger ones are refused with HTTP 413."
    ).tag(config=True)
    redact_patterns = List(
        Unicode(), help="Extra regular expressions whose matches are redacted from stored trace text."
    ).tag(config=True)
    interval = Float(0.5, help="Seconds between commits of received spans into the store.").tag(config=True)
    display_limit = Int(20, help="Rows shown when a %%sql result is displayed (0 shows every row).").tag(config=True)

    # -- defaults from the environment --------------------------------------------

    @default("store")
    def _default_store(self) -> str:
        return default_store_spec()

    @default("inbox")
    def _default_inbox(self) -> str:
        if os.environ.get(ENV_INBOX):
            return str(Path(os.environ[ENV_INBOX]).expanduser())
        if is_team_spec(self.store):  # a team store: this machine's working folder
            return str(team_location(self.store).local / "inbox")
        return str(Path(self.store).expanduser().parent / "inbox")

    @default("port")
    def _default_port(self) -> int:
        raw = os.environ.get(ENV_PORT)
        if not raw:
            return DEFAULT_PORT
        try:
            return int(raw)
        except ValueError:
            raise TraitError(f"{ENV_PORT}={raw!r} is not a port number: set it to an integer from 0 to 65535") from None

    @default("token")
    def _default_token(self) -> str | None:
        return os.environ.get(ENV_TOKEN) or None

    @default("max_body_bytes")
    def _default_max_body_bytes(self) -> int:
        try:
            from .ingest.otlp import Limits

            return int(Limits().max_body_bytes)
        except (ImportError, AttributeError, TypeError):
            return DEFAULT_MAX_BODY_BYTES

    def settings(self) -> dict:
        """Every option's current value, each checked again (defaults from the environment included)."""
        values = {}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # warned once already, when the value was set
            for name in self.class_own_traits(config=True):
                value = getattr(self, name)
                setattr(self, name, value)  # setting runs the @validate checks, which defaults skip
                values[name] = getattr(self, name)
        return values

    # -- checks -------------------------------------------------------------------

    @validate("store", "inbox")
    def _check_folder(self, proposal):
        name = proposal["trait"].name
        path = Path(proposal["value"]).expanduser()
        if not str(proposal["value"]).strip():
            raise TraitError(f"Afterfix.{name} is empty: give a folder path")
        if name == "store" and is_team_spec(proposal["value"]):  # a team store's URL or file
            try:
                team_location(proposal["value"])
            except StoreError as e:
                raise TraitError(f"Afterfix.store: {e}") from None
            return proposal["value"]
        if path.exists() and not path.is_dir():
            raise TraitError(f"Afterfix.{name} = {str(path)!r} is a file, not a folder: give a folder path")
        if not path.parent.is_dir():
            raise TraitError(
                f"Afterfix.{name} = {str(path)!r}: its parent folder {str(path.parent)!r} does not exist; create it first"
            )
        return str(path)

    @validate("port")
    def _check_port(self, proposal):
        port = proposal["value"]
        if not 0 <= port <= 65535:
            raise TraitError(f"Afterfix.port = {port} is out of range: use 0 (any free port) to 65535")
        return port

    @validate("host")
    def _check_host(self, proposal):
        host = proposal["value"].strip()
        if not host:
            raise TraitError("Afterfix.host is empty: use 127.0.0.1 to accept spans from this machine only")
        if not is_loopback(host):
            warnings.warn(
                f"Afterfix.host = {host!r} is not a loopback address: the receiver will accept spans from other "
                "machines; set Afterfix.token so that only senders who know it are accepted",
                UserWarning,
                stacklevel=2,
            )
        return host

    @validate("max_body_bytes")
    def _check_max_body(self, proposal):
        if proposal["value"] < 1024:
            raise TraitError(f"Afterfix.max_body_bytes = {proposal['value']} is too small: use at least 1024")
        return proposal["value"]

    @validate("redact_patterns")
    def _check_patterns(self, proposal):
        for i, pattern in enumerate(proposal["value"]):
            try:
                re.compile(pattern)
            except re.error as e:
                raise TraitError(f"Afterfix.redact_patterns[{i}] = {pattern!r} is not a valid regular expression: {e}")
        return proposal["value"]

    @validate("interval")
    def _check_interval(self, proposal):
        if not 0 < proposal["value"] <= 60:
            raise TraitError(f"Afterfix.interval = {proposal['value']} must be more than 0 and at most 60 seconds")
        return proposal["value"]

    @validate("display_limit")
    def _check_display_limit(self, proposal):
        if proposal["value"] < 0:
            raise TraitError(f"Afterfix.display_limit = {proposal['value']} is negative: use 0 to show every row")
        return proposal["value"]

    @validate("token")
    def _check_token(self, proposal):
        token = proposal["value"]
        if token is not None and (not token.strip() or any(c.isspace() for c in token)):
            raise TraitError("Afterfix.token must be a non-empty string without spaces (or None for no token)")
        return token
