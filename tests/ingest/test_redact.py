"""afterfix.ingest.redact: credentials out, everything else untouched, JSON still JSON."""

from __future__ import annotations

import pickle

import orjson
import pytest

from afterfix import ConfigError
from afterfix.ingest import otlp, redact
from afterfix.ingest.redact import DEFAULT_PATTERNS, Redactor

JWT = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U"
PEM = "-----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEAu1SU1LfVLPHCozMxH2Mo\n4lgOEePzNm0tRgeLezV6ffAt0gunVTLw\n-----END RSA PRIVATE KEY-----"

# (text, secret that must disappear, pattern name in the replacement)
SECRETS = [
    ("Authorization: Bearer abcdef0123456789abcdef", "abcdef0123456789abcdef", "bearer_token"),
    ("curl -H 'authorization: bearer s3cr3tT0k3nValue'", "s3cr3tT0k3nValue", "bearer_token"),
    (f"Authorization: Bearer {JWT}", JWT, "jwt"),
    (f"token is {JWT}.", JWT, "jwt"),
    ("Authorization: Basic dXNlcjpwYXNzd29yZA==", "dXNlcjpwYXNzd29yZA==", "basic_auth"),
    ("key id AKIAIOSFODNN7EXAMPLE in env", "AKIAIOSFODNN7EXAMPLE", "aws_access_key_id"),
    ("ASIAY34FZKBOKMUTVV7A", "ASIAY34FZKBOKMUTVV7A", "aws_access_key_id"),
    ("aws_secret_access_key=wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
     "aws_secret_access_key"),
    ("AWS_SECRET_ACCESS_KEY: wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY", "wJalrXUtnFEMI/K7MDENG", "aws_secret_access_key"),
    ("gcp key AIzaSyDdI0hCZtE6vySjMm-WEfRq3CPzqKqqsHI", "AIzaSyDdI0hCZtE6vySjMm-WEfRq3CPzqKqqsHI", "gcp_api_key"),
    ("DefaultEndpointsProtocol=https;AccountName=acct;AccountKey=" + "Zm9v" * 21 + "YQ==;EndpointSuffix=core.windows.net",
     "Zm9v" * 21, "azure_storage_key"),
    ("https://acct.blob.core.windows.net/c/b?sv=2022-11-02&sig=abcDEF123%2Bxyz%3D4567890", "abcDEF123%2Bxyz", "azure_sas_signature"),
    ("client secret abc8Q~defghijklmnopqrstuvwxyz0123456789ABC", "abc8Q~defghij", "azure_client_secret"),
    ("git clone https://ghp_1234567890abcdefghijklmnopqrstuvwxyzAB@github.com/x/y",
     "ghp_1234567890abcdefghijklmnopqrstuvwxyzAB", "github_token"),
    ("GITHUB_TOKEN github_pat_11ABCDEFG0abcdefghijkl_mnopqrstuvwxyz0123456789ABCDEFGHIJKLMNOPQRS",
     "github_pat_11ABCDEFG0", "github_token"),
    ("slack xoxb-123456789012-1234567890123-AbCdEfGhIjKlMnOpQrStUvWx", "xoxb-123456789012", "slack_token"),
    ("OPENAI_API_KEY=sk-proj-abcdefghijklmnopqrstuvwxyz0123", "abcdefghijklmnopqrstuvwxyz0123", "llm_api_key"),
    (PEM, "MIIEowIBAAKCAQEAu1SU1LfVLPHCozMxH2Mo", "private_key"),
    ("postgres://admin:hunter2@db.internal:5432/orders", "hunter2", "url_password"),
    ("password=hunter2 user=bob", "hunter2", "credential"),
    ("passwd: hunter2", "hunter2", "credential"),
    ("secret=0xdeadbeef", "0xdeadbeef", "credential"),
    ("token=abc.def", "abc.def", "credential"),
    ("api_key=k-123", "k-123", "credential"),
    ("DB_PASSWORD=correct-horse", "correct-horse", "credential"),
    ('{"password": "hunter2", "user": "bob"}', "hunter2", "credential"),
    ('{"client_secret":"x7-y8-z9"}', "x7-y8-z9", "credential"),
    ('{"Authorization": "Token abc123def"}', "abc123def", "credential"),
]


@pytest.fixture(params=["re2", "stdlib"])
def redactor(request, monkeypatch) -> Redactor:
    """The default patterns, pre-filtered by RE2 when installed, and by plain `in` without it."""
    if request.param == "re2":
        assert redact._re2 is not None, "google-re2 is a dependency of afterfix: pip install -e ."
    if request.param == "stdlib":
        monkeypatch.setattr(redact, "_re2", None)
    r = Redactor()
    assert (r._prefilter is None) == (request.param == "stdlib")
    return r


@pytest.mark.parametrize(("text", "secret", "name"), SECRETS)
def test_secret_is_redacted(redactor, text, secret, name):
    out, n = redactor.redact(text)
    assert secret not in out and f"[REDACTED:{name}]" in out and n >= 1
    assert redactor.redact(out) == (out, 0)  # idempotent: the replacement is never matched again


@pytest.mark.parametrize(("text", "secret", "name"), SECRETS)
def test_json_stays_valid_at_every_nesting(redactor, text, secret, name):
    """Decoders redact serialized JSON: as a value, and as a JSON string inside a value."""
    for doc in ({"v": text, "n": 1}, {"outer": orjson.dumps({"inner": text, "list": [text]}).decode()},
                {"multi": f"line one\n{text}\nline three"}):  # fmt: skip
        out, n = redactor.redact(orjson.dumps(doc).decode())
        parsed = orjson.loads(out)
        assert n >= 1 and secret not in out
        if "outer" in parsed:
            orjson.loads(parsed["outer"])


@pytest.mark.parametrize(
    "text",
    [
        '{"gen_ai.usage.input_tokens":1200,"gen_ai.usage.output_tokens":80,"llm.token_count.prompt":3}',
        '{"afterfix.target.kind":"Secret","secretName":"db-creds","max_tokens":512}',
        "timezone Asia/Tokyo, region asia-east1",
        "the bearer of bad news",
        "password reset email sent to bob@example.com",
        "https://api.example.com/v1/pods?labelSelector=app%3Dcheckout",
        "disk-pressure on node-7; risk-score 0.4",
        '{"password": null, "token": 5}',  # not a string value: cannot be replaced without breaking JSON
        "kubectl -n payments scale deployment/checkout --replicas=6",
        "eyJ alone is not a token",
        "",
    ],
)
def test_harmless_text_is_untouched(redactor, text):
    assert redactor.redact(text) == (text, 0)


def test_redact_many_agrees_with_redact(redactor):
    texts = [t for t, _, _ in SECRETS] + ["plain", None, "", "Asia/Tokyo"] * 3000
    expected = [redactor.redact(t) if t else (t, 0) for t in texts]
    got = list(texts)
    n, changed = redactor.redact_many(got)
    assert got == [e[0] for e in expected]
    assert n == sum(e[1] for e in expected) and changed == [i for i, e in enumerate(expected) if e[1]]


def test_custom_patterns_replace_or_extend(redactor):
    acme = ("acme_key", r"acme_[0-9a-f]{16}")
    only = Redactor(patterns=[acme])
    assert only.redact("k=acme_0123456789abcdef password=x") == ("k=[REDACTED:acme_key] password=x", 1)
    both = Redactor(extra=[acme, ("ticket", r"TICKET-(?P<secret>\d+)")])
    assert both.redact("acme_0123456789abcdef password=x TICKET-42") == (
        "[REDACTED:acme_key] password=[REDACTED:credential] TICKET-[REDACTED:ticket]", 3)
    texts = ["x"] * 5000 + ["TICKET-7"]
    assert both.redact_many(texts) == (1, [5000]) and texts[-1] == "TICKET-[REDACTED:ticket]"
    assert Redactor(patterns=[]).redact("password=x") == ("password=x", 0)


def test_custom_pattern_that_would_break_json_falls_back_to_values():
    """A pattern matching a quote cannot break the stored JSON: values are then redacted one by one."""
    greedy = Redactor(patterns=[("greedy", r'al"|box')])
    line = {"resourceSpans": [{"scopeSpans": [{"spans": [{
        "traceId": "4bf92f3577b34da6a3ce929d0e0e4736", "spanId": "00f067aa0ba902b7", "name": "s", "startTimeUnixNano": "1",
        "endTimeUnixNano": "2", "attributes": [{"key": "a", "value": {"stringValue": "internal"}},
                                              {"key": "b", "value": {"stringValue": "box"}}]}]}]}]}  # fmt: skip
    d = otlp.decode_json_lines(orjson.dumps(line), source="t", redactor=greedy)
    (row,) = d.spans.to_pylist()
    assert orjson.loads(row["attributes"]) == {"a": "internal", "b": "[REDACTED:greedy]"}


@pytest.mark.parametrize(
    ("patterns", "message"),
    [([("bad name!", "x")], "must be letters"), ([("quote", "(")], "not a valid regular expression"),
     ([('has"quote', "x")], "must be letters")],
)
def test_bad_patterns_are_config_errors(patterns, message):
    with pytest.raises(ConfigError, match=message):
        Redactor(patterns=patterns)


def test_redactor_pickles_for_worker_processes():
    r = pickle.loads(pickle.dumps(Redactor(extra=[("acme_key", "acme_[0-9]+")])))
    assert r.redact("acme_123 password=x") == ("[REDACTED:acme_key] password=[REDACTED:credential]", 2)
    assert [p[0] for p in DEFAULT_PATTERNS] == [p.name for p in r.patterns][:-1]


GH = "ghp_1234567890abcdefghijklmnopqrstuvwxyzAB"


def test_every_string_that_reaches_disk_is_redacted():
    kv = lambda k, v: {"key": k, "value": {"stringValue": v}}  # noqa: E731
    span = {
        "traceId": "4bf92f3577b34da6a3ce929d0e0e4736", "spanId": "00f067aa0ba902b7", "name": f"clone with {GH}",
        "startTimeUnixNano": "1", "endTimeUnixNano": "2",
        "attributes": [kv("gen_ai.tool.name", f"push {GH}"), kv("http.url", "https://u:hunter2@git.example.com/r"),
                       {"key": "nested", "value": {"kvlistValue": {"values": [kv("password", "hunter2")]}}}],
        "events": [{"timeUnixNano": "1", "name": f"event {GH}", "attributes": [kv("cmd", "mysql --password=hunter2")]}],
        "links": [{"traceId": "4bf92f3577b34da6a3ce929d0e0e4736", "spanId": "00f067aa0ba902b8",
                   "attributes": [kv("auth", "Bearer abcdefghijklmnop")]}],
        "status": {"code": 2, "message": f"failed: token={GH}"},
    }  # fmt: skip
    bad = dict(span, spanId="not-hex", name="refused", attributes=[kv("pw", "password=hunter2")])
    line = {"resourceSpans": [{"resource": {"attributes": [kv("service.name", "agent"), kv("env", "AWS_SECRET_ACCESS_KEY=" + "A" * 40)]},
                               "scopeSpans": [{"scope": {"name": f"lib {GH}"}, "spans": [span, bad]}]}]}  # fmt: skip
    d = otlp.decode_json_lines(orjson.dumps(line), source="t")
    everything = orjson.dumps([d.spans.to_pylist(), d.events.to_pylist(), [r.record for r in d.refused]], default=str).decode()
    for secret in (GH, "hunter2", "abcdefghijklmnop", "A" * 40):
        assert secret not in everything
    (row,) = d.spans.to_pylist()
    assert row["tool_name"] == "push [REDACTED:github_token]"  # hot columns come from redacted values
    assert orjson.loads(row["attributes"])["nested"] == {"password": "[REDACTED:credential]"}
    # name 1, attributes 3, event 2, link 1, status 1, scope 1, resource 1; the refused span's record 5
    assert d.redactions == 15
    assert "[REDACTED:credential]" in d.refused[0].record
