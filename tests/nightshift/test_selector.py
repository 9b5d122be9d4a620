"""Label and field selectors as the API server parses them."""

from __future__ import annotations

import pytest

from afterfix.nightshift.cluster import ApiError
from afterfix.nightshift.selector import parse_field_selector, parse_label_selector


@pytest.mark.parametrize("selector,labels,match", [
    ("app=web", {"app": "web"}, True),
    ("app==web,tier=front", {"app": "web"}, False),
    ("app!=web", {"app": "db"}, True),
    ("app in (web, api)", {"app": "api"}, True),
    ("app notin (web,api)", {"app": "api"}, False),
    ("canary", {"canary": "true"}, True),
    ("!canary", {"canary": "true"}, False),
    ("", {}, True),
])
def test_label_selectors(selector, labels, match):
    assert parse_label_selector(selector)(labels) is match


@pytest.mark.parametrize("selector", ["app in (web", "app=web=x", "a b", "=web"])
def test_malformed_label_selector_is_400(selector):
    with pytest.raises(ApiError) as e:
        parse_label_selector(selector)
    assert e.value.code == 400 and "label selector" in e.value.message


@pytest.mark.parametrize("selector,obj,match", [
    ("metadata.name=web", {"metadata": {"name": "web"}}, True),
    ("involvedObject.name=web,reason!=BackOff", {"involvedObject": {"name": "web"}, "reason": "Killing"}, True),
    ("involvedObject.name=web,reason!=BackOff", {"involvedObject": {"name": "web"}, "reason": "BackOff"}, False),
    ("spec.nodeName=", {"spec": {}}, True),
])
def test_field_selectors(selector, obj, match):
    assert parse_field_selector(selector)(obj) is match
