"""Credential redaction: every trace string is passed through a `Redactor` before it reaches disk.

A match is replaced by `[REDACTED:<name>]`. When a pattern has a group named `secret`, only that
group is replaced, so `"password": "hunter2"` becomes `"password": "[REDACTED:credential]"` and
the key stays readable. Decoders redact the serialized JSON text of attributes in one pass, so
the replaced text never contains `"` or `\\`: JSON stays valid. Where a custom pattern would break
that, decoders fall back to redacting value by value.

Speed: each default pattern carries trigger words (lowercase literals, at least one of which
appears in any text the pattern matches). With google-re2 installed, all triggers and custom
patterns are searched over thousands of values in one linear-time scan, and only values with a
hit are redacted exactly with Python's `re`; without it, each value's triggers are checked with
`in`, which gives the same result more slowly.
"""

from __future__ import annotations

import bisect
import itertools
import re

from .._exceptions import ConfigError

try:  # optional accelerator for the pre-filter; results are identical without it
    import re2 as _re2
except ImportError:  # pragma: no cover - depends on the environment
    _re2 = None

# Starts of a token: not after a letter or digit, except after a JSON escape such as \n.
_B = r"(?:(?<![A-Za-z0-9_])|(?<=\\[nrtbf]))"
# Separator between key and value: JSON (`"key": "v"`, also nested as `\"key\": \"v\"`) or
# plain (`key=v`, `key: v`). The JSON form requires a quoted value: replacing a bare number or
# null would break the JSON.
_SEP = r"(?:(?P<q>\\*\")[ \t]*[:=][ \t]*(?P=q)|[ \t]*[:=][ \t]*)"
_KEYWORDS = (
    "password", "passwd", "passphrase", "secret", "token", "api_key", "api-key", "apikey",
    "access_key", "access-key", "accesskey", "auth_token", "authorization", "private_key",
    "private-key", "credential", "credentials",
)  # fmt: skip

# Order matters: PEM blocks before key=value (a "private_key" value is a PEM block), specific
# token shapes before the generic assignment.
DEFAULT_PATTERNS: list[tuple[str, str]] = [
    ("private_key",
     r"-----BEGIN[A-Z ]{0,40}PRIVATE KEY-----(?:[A-Za-z0-9+/=\s]|\\+[nrt])*(?:-----END[A-Z ]{0,40}PRIVATE KEY-----)?"),
    ("jwt", _B + r"eyJ[A-Za-z0-9_-]{5,}\.eyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]{5,}"),
    ("bearer_token", r"(?i:\bbearer)[ \t]+(?!\[REDACTED:)(?P<secret>[A-Za-z0-9._~+/-]{8,}=*)"),
    ("basic_auth", r"(?i:authorization)\\*\"?[ \t]*[:=][ \t]*\\*\"?(?i:basic)[ \t]+(?P<secret>[A-Za-z0-9+/]{4,}=*)"),
    ("aws_access_key_id", _B + r"(?:AKIA|ASIA|ABIA|ACCA)[A-Z0-9]{16}(?![A-Za-z0-9])"),
    ("aws_secret_access_key", r"(?i:aws_?secret_?access_?key)" + _SEP + r"(?P<secret>[A-Za-z0-9/+=]{40})(?![A-Za-z0-9/+=])"),
    ("gcp_api_key", _B + r"AIza[0-9A-Za-z_-]{35}"),
    ("azure_storage_key", r"(?i:accountkey)=(?P<secret>[A-Za-z0-9+/]{20,}={0,2})"),
    ("azure_sas_signature", r"[?&](?i:sig)=(?P<secret>[A-Za-z0-9%+/=]{16,})"),
    ("azure_client_secret", _B + r"[A-Za-z0-9_.-]{3}[0-9]Q~[A-Za-z0-9_~.-]{31,34}"),
    ("github_token", _B + r"(?:gh[pousr]_[A-Za-z0-9]{36,}|github_pat_[A-Za-z0-9_]{22,})"),
    ("slack_token", _B + r"xox[baprs]-[A-Za-z0-9-]{10,}"),
    ("llm_api_key", _B + r"sk-(?:proj-|ant-[a-z0-9]+-)?[A-Za-z0-9_-]{20,}"),
    ("url_password", r"(?i:\b[a-z][a-z0-9+.-]{0,20}://)[^\s:/@\"\\?#\[\]]+:(?!\[REDACTED:)(?P<secret>[^\s@/\"\\?#]+)@"),
    ("credential",
     r"(?i:" + "|".join(re.escape(k) for k in _KEYWORDS) + r")" + _SEP
     + r"(?:(?i:bearer|basic|token|digest)[ \t]+)?+(?!\[REDACTED:)(?P<secret>[^\s\"\\,;&'}\])]+)"),
]  # fmt: skip

# Trigger literals of the default patterns (lowercase): one of them occurs in any match.
_TRIGGERS: dict[str, tuple[str, ...]] = {
    "private_key": ("private key-----",),
    "jwt": ("eyj",),
    "bearer_token": ("bearer",),
    "basic_auth": ("authorization",),
    "aws_access_key_id": ("akia", "asia", "abia", "acca"),
    "aws_secret_access_key": ("secret",),
    "gcp_api_key": ("aiza",),
    "azure_storage_key": ("accountkey=",),
    "azure_sas_signature": ("sig=",),
    "azure_client_secret": ("q~",),
    "github_token": ("ghp_", "gho_", "ghu_", "ghs_", "ghr_", "github_pat_"),
    "slack_token": ("xoxb-", "xoxa-", "xoxp-", "xoxr-", "xoxs-"),
    "llm_api_key": ("sk-",),
    "url_password": ("@",),
    "credential": tuple(k + c for k in _KEYWORDS for c in ('"', "\\", "=", ":", " ", "\t")),
}
_DEFAULT_TEXT = dict(DEFAULT_PATTERNS)
_NAME_OK = re.compile(r"[A-Za-z0-9_.:-]+")
_CHUNK = 4096  # values per pre-filter scan: bounds the joined text's size


class _Pattern:
    __slots__ = ("name", "regex", "triggers", "groups", "replacement", "has_secret")

    def __init__(self, name: str, regex: str):
        if not isinstance(name, str) or not _NAME_OK.fullmatch(name):
            raise ConfigError(f"redaction pattern name {name!r} must be letters, digits, '_', '.', ':' or '-'")
        try:
            # ASCII: \d, \w and \b then agree with RE2, which pre-filters custom patterns.
            self.regex = re.compile(regex, re.ASCII)
        except (re.error, TypeError) as e:
            raise ConfigError(f"redaction pattern {name!r} is not a valid regular expression: {e}") from e
        self.name = name
        self.replacement = f"[REDACTED:{name}]"
        self.has_secret = "secret" in self.regex.groupindex
        self.triggers = _TRIGGERS.get(name) if _DEFAULT_TEXT.get(name) == regex else None
        self.groups = _group(self.triggers) if self.triggers else None

    def sub(self, text: str) -> tuple[str, int]:
        if not self.has_secret:
            return self.regex.subn(self.replacement, text)
        rep = self.replacement

        def one(m: re.Match) -> str:
            s, e = m.span("secret")
            if s < 0:
                return rep
            g, b = m.group(0), m.start()
            return g[: s - b] + rep + g[e - b :]

        return self.regex.subn(one, text)


class Redactor:
    """Replaces credentials in text with `[REDACTED:<name>]`.

    `patterns` replaces the default list of (name, regex) pairs; `extra` adds to it. Patterns
    are applied in order. A group named `secret` limits the replacement to that group.
    """

    def __init__(self, patterns: list[tuple[str, str]] | None = None, extra=()):
        pairs = list(DEFAULT_PATTERNS if patterns is None else patterns) + list(extra)
        self.patterns = [_Pattern(n, r) for n, r in pairs]
        self._prefilter = _compile_prefilter(self.patterns)

    def __repr__(self) -> str:
        return f"Redactor({[p.name for p in self.patterns]})"

    def __reduce__(self):
        # RE2 objects do not pickle: rebuild from the pairs (decoding runs in worker processes)
        return Redactor, ([(p.name, p.regex.pattern) for p in self.patterns],)

    def redact(self, text: str) -> tuple[str, int]:
        """`text` with every credential replaced, and how many were replaced."""
        if not text:
            return text, 0
        low = None
        total = 0
        for p in self.patterns:
            if p.groups is not None:
                if low is None:
                    low = text.lower()
                for head, rest in p.groups:
                    if head in low and (rest is None or any(t in low for t in rest)):
                        break
                else:
                    continue
            text, n = p.sub(text)
            if n:
                total += n
                low = None
        return text, total

    def redact_many(self, texts: list) -> tuple[int, list[int]]:
        """Redacts a list of strings (None allowed) in place; returns (replacements, changed indices)."""
        total = 0
        changed: list[int] = []
        for i in self._candidates(texts):
            t = texts[i]
            new, n = self.redact(t)
            if n:
                texts[i] = new
                total += n
                changed.append(i)
        return total, changed

    def _candidates(self, texts: list):
        """Indices of the values that may hold a credential (a superset: exactness comes later)."""
        pre = self._prefilter
        if pre is None:  # without RE2: every non-empty value goes through redact()'s triggers
            return [i for i, t in enumerate(texts) if t]
        if pre is _NOTHING:
            return []
        out: list[int] = []
        for c0 in range(0, len(texts), _CHUNK):
            chunk = texts[c0 : c0 + _CHUNK]
            try:
                joined = "\n".join(chunk)
            except TypeError:  # None among them
                chunk = [t or "" for t in chunk]
                joined = "\n".join(chunk)
            ends = None
            last = -1
            for m in pre.finditer(joined):
                if ends is None:
                    ends = list(itertools.accumulate(len(t) + 1 for t in chunk))
                # every value the match overlaps: a match across the separator must not hide one
                first = bisect.bisect_right(ends, m.start())
                stop = bisect.bisect_right(ends, max(m.end() - 1, m.start()))
                for j in range(max(first, last + 1), stop + 1):
                    out.append(c0 + j)
                    last = j
        return out


def _group(triggers: tuple[str, ...]) -> tuple:
    """Triggers grouped by their first 5 characters: one `in` per group rules most of them out."""
    by_head: dict[str, list[str]] = {}
    for t in triggers:
        by_head.setdefault(t[:5], []).append(t)
    return tuple((h, None if ts == [h] else tuple(ts)) for h, ts in by_head.items())


class _Nothing:
    pass


_NOTHING = _Nothing()  # a pattern list that can never match (empty)


def _compile_prefilter(patterns: list[_Pattern]):
    """One RE2 expression matching every trigger and every custom pattern, or None (use `in`)."""
    if not patterns:
        return _NOTHING
    if _re2 is None:
        return None
    triggers = sorted({t for p in patterns if p.triggers for t in p.triggers})
    parts = []
    if triggers:
        parts.append("(?i:" + "|".join(_re2.escape(t) for t in triggers) + ")")
    opts = _re2.Options()
    opts.log_errors = False
    opts.never_capture = True
    for p in patterns:
        if p.triggers is None:
            try:
                _re2.compile(p.regex.pattern, opts)
            except _re2.error:
                return None  # RE2 cannot read it (e.g. a back-reference): fall back to `in`
            # capture names may repeat between patterns, which one RE2 expression refuses
            parts.append("(?:" + re.sub(r"\(\?P<\w+>", "(?:", p.regex.pattern) + ")")
    try:
        return _re2.compile("|".join(parts), opts)
    except _re2.error:  # pragma: no cover - each part compiled alone
        return None


DEFAULT = Redactor()
"""The redactor decoders use unless told otherwise."""
