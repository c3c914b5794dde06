"""The admin API's contract (chaosemergence/contract.py): a valid OpenAPI document, and the
checks the handlers run refusing what the document says is invalid, naming the field."""

from __future__ import annotations

from typing import Any

import pytest
from openapi_spec_validator import validate

from chaosemergence.app.switches import ALL_DEFENSES
from chaosemergence.contract import AdminContract, InvalidField, check

DEPENDENCIES = ("database", "payments", "recommendations")


@pytest.fixture
def contract() -> AdminContract:
    return AdminContract(3, DEPENDENCIES, "shared", 900.0)


def test_the_document_is_valid_openapi(contract: AdminContract) -> None:
    """openapi-spec-validator accepts the generated document."""
    document = contract.document(ALL_DEFENSES)
    validate(document)  # raises on an invalid document
    assert document["openapi"].startswith("3.")
    assert document["security"] == [{"token": []}]


def test_the_document_carries_the_schemas_the_handlers_check(contract: AdminContract) -> None:
    """The fault body in the document is the very schema the handler checks with."""
    paths = contract.document(ALL_DEFENSES)["paths"]
    body = paths["/admin/faults"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert body == contract.fault
    assert body["properties"]["dependency"]["enum"] == ["all", *sorted([*DEPENDENCIES, "shared"])]
    assert body["properties"]["cells"]["items"]["maximum"] == 2
    names = paths["/admin/defenses"]["post"]["requestBody"]["content"]["application/json"]
    assert names["schema"]["properties"]["names"]["items"]["enum"] == list(ALL_DEFENSES)


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"duration": 5}, "kind"),
        ({"kind": "boom", "duration": 5}, "kind"),
        ({"kind": "error"}, "duration"),
        ({"kind": "error", "duration": 0}, "duration"),
        ({"kind": "error", "duration": True}, "duration"),
        ({"kind": "error", "duration": 5, "percentage": 0}, "percentage"),
        ({"kind": "error", "duration": 5, "percentage": 101}, "percentage"),
        ({"kind": "error", "duration": 5, "dependency": "nope"}, "dependency"),
        ({"kind": "latency", "duration": 5}, "latency_ms"),
        ({"kind": "error", "duration": 5, "latency_ms": -1}, "latency_ms"),
        ({"kind": "error", "duration": 5, "cells": []}, "cells"),
        ({"kind": "error", "duration": 5, "cells": [0, 3]}, "cells[1]"),
        ({"kind": "error", "duration": 5, "cells": [True]}, "cells[0]"),
        ({"kind": "error", "duration": 5, "cells": "0"}, "cells"),
    ],
)
def test_a_bad_fault_request_names_its_field(
    contract: AdminContract, body: dict[str, Any], field: str
) -> None:
    """Each bad field is refused as that field."""
    with pytest.raises(InvalidField) as refused:
        contract.check_fault(body)
    assert refused.value.field == field
    assert str(refused.value).startswith(field)


def test_a_good_fault_request_is_normalized(contract: AdminContract) -> None:
    """Defaults filled in, numbers as floats, cells sorted and unique."""
    normalized, cells = contract.check_fault({"kind": "error", "duration": 5, "cells": [2, 0, 2]})
    assert normalized == {
        "kind": "error",
        "percentage": 100.0,
        "duration": 5.0,
        "dependency": "all",
        "latency_ms": 0.0,
    }
    assert cells == [0, 2]


@pytest.mark.parametrize("raw", ["x", "-1", "3", "1.5"])
def test_a_bad_cell_index_in_a_path_names_index(contract: AdminContract, raw: str) -> None:
    with pytest.raises(InvalidField) as refused:
        contract.check_index(raw)
    assert refused.value.field == "index"


@pytest.mark.parametrize("raw", ["abc", "nan", "inf", "-1", "0", "901"])
def test_a_bad_query_number_names_its_parameter(contract: AdminContract, raw: str) -> None:
    with pytest.raises(InvalidField) as refused:
        contract.check_query_number(raw, "seconds", contract.seconds, 30.0)
    assert refused.value.field == "seconds"


def test_defense_names_must_be_known(contract: AdminContract) -> None:
    schema = contract.defenses_schema(ALL_DEFENSES)
    check(schema, {"enabled": False, "names": ["jitter"]})
    with pytest.raises(InvalidField) as refused:
        check(schema, {"enabled": False, "names": ["jitter", "nope"]})
    assert refused.value.field == "names[1]"
    with pytest.raises(InvalidField) as refused:
        check(schema, {"enabled": "no"})
    assert refused.value.field == "enabled"
