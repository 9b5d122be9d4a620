"""The guard policy: YAML rules from kind and namespace to analyses, first match wins, errors by line."""

from __future__ import annotations

from pathlib import Path

import pytest

from afterfix.undo.analysis import AnalysisError, AnalysisSpec, measure_phase, parse_analysis
from afterfix.undo.policy import Policy, PolicyError, load_policy

EXAMPLE = Path(__file__).resolve().parents[2] / "templates" / "guard-policy.yaml"
PAYMENTS = {"kind": "Deployment", "namespace": "shop", "name": "payments"}

METRIC = """\
      - name: latency-p95
        successCondition: "result < 300"
        provider:
          afterfix:
            metric: afterfix.workload.latency_p95_ms
            labels:
              k8s.namespace.name: "{{namespace}}"
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "policy.yaml"
    path.write_text(text)
    return path


# ---- the documented example ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def example() -> Policy:
    return load_policy(EXAMPLE)


@pytest.mark.parametrize("kind, namespace, names, latency", [
    ("Deployment", "shop", ["latency-p95", "error-rate"], "result < 250"),  # the stricter rule for shop
    ("HorizontalPodAutoscaler", "shop", ["latency-p95", "error-rate"], "result < 250"),
    ("Deployment", "platform", ["latency-p95", "error-rate"], "result < 300"),  # every other namespace
    ("HorizontalPodAutoscaler", "payments-eu", ["latency-p95", "error-rate"], "result < 300"),
    ("Deployment", "shopping", ["latency-p95", "error-rate"], "result < 300"),  # "shop" is not a prefix glob
    ("ConfigMap", "shop", [], None),  # no rule for other kinds
    ("deployment", "shop", [], None),  # kinds match case-sensitively, as Kubernetes spells them
    ("Job", "platform", [], None),
])
def test_the_example_policy_matches_as_documented(example, kind, namespace, names, latency):
    specs = example.analyses_for(kind, namespace)
    assert [s.name for s in specs] == names
    first = example.analysis_for(kind, namespace)
    assert (first.success_condition if first else None) == latency
    assert all(isinstance(s, AnalysisSpec) for s in specs)


def test_the_example_policy_is_stricter_for_shop(example):
    shop = {s.name: s for s in example.analyses_for("Deployment", "shop")}
    other = {s.name: s for s in example.analyses_for("Deployment", "platform")}
    assert shop["latency-p95"].failure_limit < other["latency-p95"].failure_limit
    assert shop["error-rate"].failure_condition == "result >= 0.01"
    assert other["error-rate"].failure_condition == "result >= 0.05"
    assert measure_phase(shop["latency-p95"], 280)[0] == "Failed"
    assert measure_phase(other["latency-p95"], 280)[0] == "Successful"


def test_the_example_specs_bind_to_a_target(example):
    for spec in example.analyses_for("Deployment", "shop"):
        assert spec.templates == {"namespace", "name"}
        bound = spec.bind(PAYMENTS)
        assert bound.labels == {"k8s.namespace.name": "shop", "k8s.deployment.name": "payments"}
        assert parse_analysis(bound.to_dict()) == bound


def test_an_example_spec_names_its_file_and_line_when_a_bind_is_refused(example):
    spec = example.analysis_for("Deployment", "shop")
    with pytest.raises(AnalysisError) as e:
        spec.bind(dict(PAYMENTS, name='x"}'))
    assert str(e.value).startswith(f"{EXAMPLE} line ") and "rules[0].metrics[0]: target.name" in str(e.value)


def test_rules_keep_their_lines_and_order(example):
    lines = [rule.line for rule in example.rules]
    text = EXAMPLE.read_text().splitlines()
    assert lines == sorted(lines) and len(lines) == 2
    assert all(text[n - 1].lstrip().startswith("- kinds:") for n in lines)


# ---- matching -----------------------------------------------------------------------------------


def test_first_matching_rule_wins_and_left_out_patterns_match_everything(tmp_path):
    policy = load_policy(write(tmp_path, ('rules:\n  - namespaces: ["team-*"]\n    kinds: Deployment\n    metrics:\n'
                                          + METRIC.replace("result < 300", "result < 100") + "  - metrics:\n" + METRIC)))
    assert policy.analysis_for("Deployment", "team-a").success_condition == "result < 100"
    assert policy.analysis_for("StatefulSet", "team-a").success_condition == "result < 300"
    assert policy.analysis_for("Deployment", "shop").success_condition == "result < 300"
    assert policy.analysis_for("Namespace", None).success_condition == "result < 300"  # cluster-scoped: only "*"
    assert policy.rules[0].kinds == ("Deployment",) and policy.rules[1].kinds == ("*",)


def test_a_cluster_scoped_target_matches_only_star(tmp_path):
    policy = load_policy(write(tmp_path, 'rules:\n  - namespaces: ["?*"]\n    metrics:\n' + METRIC))
    assert policy.analysis_for("Deployment", "shop") is not None
    assert policy.analysis_for("ClusterRole", None) is None


# ---- errors name the file, the line and the fix ------------------------------------------------


BAD = [
    # (policy text, line, what the error says)
    ("rules: [\n", 2, "is not valid YAML"),
    ("rules:\n  - kinds: [Deployment\n    metrics: []\n", 3, "is not valid YAML"),
    ("rules: []\n---\nrules: []\n", 2, "is not valid YAML"),
    ("", 1, "is empty"),
    ("- a\n- b\n", 1, "must be a mapping with rules"),
    ("rule:\n  - metrics: []\n", 1, "rule: is not a key a policy has here; known keys: rules"),
    ("rules: []\n", 1, "rules: must be a list of at least one rule"),
    ("rules:\n  - kinds: [Deployment]\n", 2, "rules[0].metrics: must be a list of at least one metric"),
    ("rules:\n  - kind: [Deployment]\n    metrics: []\n", 2, "rules[0].kind: is not a key a policy has here; "
                                                           "known keys: kinds, namespaces, metrics"),
    ("rules:\n  - kinds: []\n", 2, "rules[0].kinds: must be a list of patterns"),
    ("rules:\n  - kinds:\n      - Deployment\n      - 'x y'\n", 4, "rules[0].kinds[1]: 'x y' is not a kind"),
    ("rules:\n  - namespaces: [Shop]\n", 2, "rules[0].namespaces[0]: 'Shop' is not a namespace"),
    ("rules:\n  - namespaces: 5\n", 2, "rules[0].namespaces: must be a list of patterns"),
    ("rules:\n  - metrics: [5]\n", 2, "rules[0].metrics[0]: 5 is not an object"),
    ("rules:\n  - metrics:\n      - name: a\n        failurelimit: 1\n", 4,
     "rules[0].metrics[0].failurelimit: is not a key afterfix knows; did you mean failureLimit?"),
    ("rules:\n  - metrics:\n      - name: a\n        successCondition: \"__import__('os')\"\n", 4,
     "rules[0].metrics[0].successCondition: condition \"__import__('os')\": name '__import__' is not allowed"),
    ("rules:\n  - metrics:\n      - name: a\n        successCondition: result < 1\n", 3,
     "rules[0].metrics[0].provider: is missing"),
    ("rules:\n  - metrics:\n      - successCondition: result < 1\n", 3, "rules[0].metrics[0].name: is missing"),
    ("rules:\n  - metrics:\n      - name: a\n        successCondition: result < 1\n        provider:\n"
     "          afterfix:\n            metric: m\n            labels:\n              k8s.namespace.name: '{{ns}}'\n",
     9, "rules[0].metrics[0].provider.afterfix.labels.k8s.namespace.name: '{{ns}}' is not a template"),
    ("rules:\n  - metrics:\n      - name: a\n        successCondition: result < 1\n        provider:\n"
     "          afterfix:\n            metric: m\n            labelz: {}\n", 8,
     "rules[0].metrics[0].provider.afterfix.labelz: is not a key afterfix knows; did you mean labels?"),
    ("rules:\n  - metrics:\n" + METRIC + METRIC, 10,
     "rules[0].metrics[1].name: 'latency-p95' is already the name of metrics[0] in this rule"),
    ("rules:\n  - kinds: [A]\n    kinds: [B]\n", 3, "rules[0].kinds: is given twice (first on line 2)"),
    ("base: &b {name: a}\nrules:\n  - metrics:\n      - <<: *b\n", 4, "merge keys (<<) are not supported"),
    ("rules:\n  - metrics:\n      - name: !!python/object:os.system x\n", 3, "cannot be read"),
    ("rules:\n  - {1: a}\n", 2, "the key 1 is not text"),
]


@pytest.mark.parametrize("text, line, says", BAD)
def test_a_bad_policy_names_its_file_and_line(tmp_path, text, line, says):
    path = tmp_path / "policy.yaml"
    path.write_text(text)
    with pytest.raises(PolicyError) as e:
        load_policy(path)
    assert e.value.path == str(path) and e.value.line == line, str(e.value)
    assert str(e.value).startswith(f"{path} line {line}: ")
    assert says in str(e.value)


def test_a_missing_file_says_where_an_example_is(tmp_path):
    with pytest.raises(PolicyError, match="no such file; write one \\(templates/guard-policy.yaml is an example\\)"):
        load_policy(tmp_path / "nope.yaml")


def test_a_file_that_is_not_utf8_names_its_line(tmp_path):
    path = tmp_path / "policy.yaml"
    path.write_bytes(b"rules:\n  - kinds: [\xff]\n")
    with pytest.raises(PolicyError, match=r"line 2: is not UTF-8 text"):
        load_policy(path)


def test_an_alias_bomb_is_refused(tmp_path):
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]" for i in range(1, 8)]
    path = tmp_path / "policy.yaml"
    path.write_text("\n".join(lines) + "\nrules: *a7\n")
    with pytest.raises(PolicyError, match="aliases"):
        load_policy(path)


def test_policy_errors_are_analysis_errors():
    assert issubclass(PolicyError, AnalysisError)
