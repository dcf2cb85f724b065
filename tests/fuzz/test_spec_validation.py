"""Any JSON for any request body model: a value or a ValidationError, never another exception."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import BaseModel, ValidationError

from metastack.api.control.context import describe
from metastack.api.control.routes import ROUTES

BODY_MODELS = sorted({route.body for route in ROUTES if route.body}, key=lambda m: m.__name__)

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=8,
)


def _bodies(model: type[BaseModel]) -> st.SearchStrategy[dict[str, Any]]:
    names = sorted(model.model_fields)
    return st.dictionaries(st.sampled_from(names) | st.text(max_size=8), json_values, max_size=5)


@pytest.mark.parametrize("model", BODY_MODELS, ids=lambda m: m.__name__)
@pytest.mark.parametrize("value", [None, -1, "", [], {}], ids=repr)
def test_every_field_with_odd_values(model: type[BaseModel], value: Any) -> None:
    for name in model.model_fields:
        try:
            model.model_validate_json(json.dumps({name: value}), context={"max_user_data_bytes": 8})
        except ValidationError as exc:
            assert describe(exc)


@pytest.mark.parametrize("model", BODY_MODELS, ids=lambda m: m.__name__)
@settings(max_examples=50, deadline=None)
@given(data=st.data())
def test_any_json_body(model: type[BaseModel], data: st.DataObject) -> None:
    body = data.draw(_bodies(model))
    try:
        model.model_validate_json(json.dumps(body), context={"max_user_data_bytes": 65535})
    except ValidationError as exc:
        assert describe(exc)
