"""The patch formats of the Kubernetes API on plain JSON: RFC 7386 merge patch (the RFC's own
examples), strategic merge by merge key, RFC 6902 JSON patch and its errors."""

from __future__ import annotations

import pytest

from afterfix.nightshift.patches import PatchError, json_patch, merge_patch, strategic_merge_patch


@pytest.mark.parametrize("target,patch,result", [
    # RFC 7386 appendix A examples
    ({"a": "b"}, {"a": "c"}, {"a": "c"}),
    ({"a": "b"}, {"b": "c"}, {"a": "b", "b": "c"}),
    ({"a": "b"}, {"a": None}, {}),
    ({"a": "b", "b": "c"}, {"a": None}, {"b": "c"}),
    ({"a": ["b"]}, {"a": "c"}, {"a": "c"}),
    ({"a": "c"}, {"a": ["b"]}, {"a": ["b"]}),
    ({"a": {"b": "c"}}, {"a": {"b": "d", "c": None}}, {"a": {"b": "d"}}),
    ({"a": [{"b": "c"}]}, {"a": [1]}, {"a": [1]}),
    ({"e": None}, {"a": 1}, {"e": None, "a": 1}),
    ({}, {"a": {"bb": {"ccc": None}}}, {"a": {"bb": {}}}),
])
def test_merge_patch_rfc7386(target, patch, result):
    assert merge_patch(target, patch) == result


CONTAINERS = {"containers": [{"name": "app", "image": "a:1", "env": [{"name": "A", "value": "1"}],
                              "ports": [{"containerPort": 80}]},
                             {"name": "sidecar", "image": "s:1"}]}


@pytest.mark.parametrize("patch,check", [
    ({"containers": [{"name": "app", "image": "a:2"}]},
     lambda r: [c["image"] for c in r["containers"]] == ["a:2", "s:1"] and r["containers"][0]["env"]),
    ({"containers": [{"name": "new", "image": "n:1"}]},
     lambda r: [c["name"] for c in r["containers"]] == ["app", "sidecar", "new"]),
    ({"containers": [{"name": "sidecar", "$patch": "delete"}]},
     lambda r: [c["name"] for c in r["containers"]] == ["app"]),
    ({"containers": [{"name": "app", "env": [{"name": "B", "value": "2"}]}]},
     lambda r: r["containers"][0]["env"] == [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}]),
    ({"containers": [{"name": "app", "ports": [{"containerPort": 80, "name": "http"}]}]},
     lambda r: r["containers"][0]["ports"] == [{"containerPort": 80, "name": "http"}]),
    ({"containers": [{"name": "app", "image": "x"}, {"$patch": "replace"}]},
     lambda r: r["containers"] == [{"name": "app", "image": "x"}]),
    ({"$setElementOrder/containers": [{"name": "app"}], "containers": [{"name": "app", "image": "z"}]},
     lambda r: "$setElementOrder/containers" not in r and r["containers"][0]["image"] == "z"),
])
def test_strategic_merge_patch_merges_lists_by_key(patch, check):
    result = strategic_merge_patch(CONTAINERS, patch)
    assert check(result), result
    assert CONTAINERS["containers"][0]["image"] == "a:1"  # inputs are never changed


@pytest.mark.parametrize("ops,result", [
    ([{"op": "add", "path": "/b", "value": 2}], {"a": [1, 2], "b": 2}),
    ([{"op": "add", "path": "/a/-", "value": 3}], {"a": [1, 2, 3]}),
    ([{"op": "add", "path": "/a/0", "value": 0}], {"a": [0, 1, 2]}),
    ([{"op": "remove", "path": "/a/1"}], {"a": [1]}),
    ([{"op": "replace", "path": "/a", "value": "x"}], {"a": "x"}),
    ([{"op": "move", "from": "/a", "path": "/c"}], {"c": [1, 2]}),
    ([{"op": "copy", "from": "/a/0", "path": "/d"}], {"a": [1, 2], "d": 1}),
    ([{"op": "test", "path": "/a/1", "value": 2}, {"op": "remove", "path": "/a"}], {}),
])
def test_json_patch_rfc6902(ops, result):
    assert json_patch({"a": [1, 2]}, ops) == result


@pytest.mark.parametrize("ops,message", [
    ([{"op": "test", "path": "/a/0", "value": 9}], "test failed at /a/0"),
    ([{"op": "remove", "path": "/nope"}], "/nope"),
    ([{"op": "replace", "path": "/a/7", "value": 1}], "/a/7"),
    ([{"op": "frobnicate", "path": "/a"}], "unknown op"),
    ({"op": "add"}, "list of operations"),
])
def test_json_patch_errors_name_the_path(ops, message):
    with pytest.raises(PatchError, match=message):
        json_patch({"a": [1, 2]}, ops)
