"""Mapping of Upstox error answers to the bot's error tree."""

from __future__ import annotations

from typing import Any

import pytest

from upstox_bot.errors import BrokerUnavailable, NotFound, OrderRejected
from upstox_bot.upstox.errors import (
    ERROR_CODE_CATEGORIES,
    ErrorCategory,
    UpstoxApiError,
    UpstoxAuthError,
    UpstoxForbidden,
    UpstoxNotFound,
    UpstoxOrderRejected,
    UpstoxRateLimited,
    UpstoxRequestError,
    UpstoxServerError,
    UpstoxServiceClosed,
    error_from_response,
)


def body(*codes: str, camel_only: bool = False) -> dict[str, Any]:
    problems: list[dict[str, Any]] = []
    for code in codes:
        if camel_only:
            problems.append({"errorCode": code, "message": f"msg {code}", "propertyPath": "qty"})
        else:
            problems.append(
                {
                    "error_code": code,
                    "message": f"msg {code}",
                    "property_path": "quantity",
                    "errorCode": "IGNORED",
                    "invalid_value": 0,
                }
            )
    return {"status": "error", "errors": problems}


def test_invalid_token_is_auth_error_and_not_retryable() -> None:
    error = error_from_response(401, body("UDAPI100050"))
    assert isinstance(error, UpstoxAuthError)
    assert not isinstance(error, BrokerUnavailable)
    assert error.status_code == 401
    assert error.error_codes == ("UDAPI100050",)
    assert "UDAPI100050" in str(error)


def test_snake_case_code_wins_over_camel_case_copy() -> None:
    error = error_from_response(400, body("UDAPI1052"))
    assert error.error_code == "UDAPI1052"
    assert error.problems[0].property_path == "quantity"
    assert error.problems[0].invalid_value == 0


def test_camel_case_only_problem_is_still_read() -> None:
    error = error_from_response(400, body("UDAPI1148", camel_only=True))
    assert error.error_code == "UDAPI1148"
    assert error.problems[0].property_path == "qty"
    assert isinstance(error, UpstoxRequestError)


@pytest.mark.parametrize(
    ("status", "payload", "expected"),
    [
        (429, body("UDAPI10005"), UpstoxRateLimited),
        (429, "<html>cloudflare</html>", UpstoxRateLimited),  # non-JSON rate-limit page
        (500, body("UDAPI100500"), UpstoxServerError),
        (503, None, UpstoxServerError),
        (400, body("UDAPI100072"), UpstoxServiceClosed),
        (403, None, UpstoxForbidden),
        (400, body("UDAPI100067"), UpstoxForbidden),
        (400, body("UDAPI100010"), UpstoxNotFound),
        (404, None, UpstoxNotFound),
        (400, body("UDAPI1148"), UpstoxRequestError),
        (400, body("UDAPI9999999"), UpstoxRequestError),  # unknown code: by status
        (401, None, UpstoxAuthError),
    ],
)
def test_read_errors_map_by_code_then_status(
    status: int, payload: Any, expected: type[UpstoxApiError]
) -> None:
    assert type(error_from_response(status, payload)) is expected


def test_transient_errors_are_broker_unavailable() -> None:
    for status, payload in ((429, body("UDAPI10005")), (500, None), (400, body("UDAPI100072"))):
        assert isinstance(error_from_response(status, payload), BrokerUnavailable)


@pytest.mark.parametrize(
    "code",
    [
        "UDAPI1154",
        "UDAPI1156",
        "UDAPI1158",
        "UDAPI1159",
        "UDAPI1160",
        "UDAPI100074",
        "UDAPI1118",
        "UDAPI1052",
        "UDAPI1039",
        "UDAPI100040",
        "UDAPI100010",
        "UDAPI100049",
    ],
)
def test_order_write_refusals_are_order_rejected(code: str) -> None:
    error = error_from_response(400, body(code), order_write=True, context="POST /v3/order/place")
    assert isinstance(error, UpstoxOrderRejected)
    assert isinstance(error, OrderRejected)
    assert str(error).startswith("POST /v3/order/place: ")


def test_order_write_auth_and_availability_keep_their_class() -> None:
    assert type(error_from_response(401, body("UDAPI100050"), order_write=True)) is (
        UpstoxAuthError
    )
    assert type(error_from_response(500, None, order_write=True)) is UpstoxServerError
    assert type(error_from_response(429, None, order_write=True)) is UpstoxRateLimited


def test_unknown_order_on_read_is_not_found() -> None:
    error = error_from_response(400, body("UDAPI100010"))
    assert isinstance(error, NotFound)
    assert not isinstance(error, OrderRejected)


def test_first_known_code_decides() -> None:
    error = error_from_response(400, body("UDAPI0000000", "UDAPI100050", "UDAPI1052"))
    assert isinstance(error, UpstoxAuthError)
    assert error.error_codes == ("UDAPI0000000", "UDAPI100050", "UDAPI1052")


# Every code named in API.md 1.1, 6, 7 and 8.4 has a category.
DOCUMENTED_CODES = [
    "UDAPI10000",
    "UDAPI10005",
    "UDAPI100015",
    "UDAPI100016",
    "UDAPI100036",
    "UDAPI100038",
    "UDAPI100050",
    "UDAPI100067",
    "UDAPI100068",
    "UDAPI100072",
    "UDAPI100073",
    "UDAPI100500",
    "UDAPI100057",
    "UDAPI100010",
    "UDAPI100011",
    "UDAPI1003",
    "UDAPI1023",
    "UDAPI1004",
    "UDAPI1007",
    "UDAPI1010",
    "UDAPI1026",
    "UDAPI1029",
    "UDAPI1030",
    "UDAPI1031",
    "UDAPI1032",
    "UDAPI1036",
    "UDAPI1039",
    "UDAPI1052",
    "UDAPI1055",
    "UDAPI1056",
    "UDAPI100040",
    "UDAPI100041",
    "UDAPI100049",
    "UDAPI100074",
    "UDAPI1118",
    "UDAPI1154",
    "UDAPI1156",
    "UDAPI1158",
    "UDAPI1159",
    "UDAPI1160",
    "UDAPI1161",
    "UDAPI1179",
    "UDAPI1180",
    "UDAPI1181",
    "UDAPI1009",
    "UDAPI1011",
    "UDAPI1087",
    "UDAPI1015",
    "UDAPI1020",
    "UDAPI1021",
    "UDAPI1022",
    "UDAPI1076",
    "UDAPI1146",
    "UDAPI1147",
    "UDAPI1148",
    "UDAPI1027",
    "UDAPI1028",
    "UDAPI1088",
    "UDAPI1089",
    "UDAPI1095",
    "UDAPI1104",
    "UDAPI1059",
    "UDAPI1065",
    "UDAPI1105",
    "UDAPI1108",
    "UDAPI1109",
    "UDAPI1184",
    "UDAPI1188",
    "UDAPI1017",
    "UDAPI1018",
    "UDAPI1024",
    "UDAPI1019",
    "UDAPI100042",
    "UDAPI100043",
]


def test_every_documented_code_has_a_category() -> None:
    missing = [code for code in DOCUMENTED_CODES if code not in ERROR_CODE_CATEGORIES]
    assert missing == []
    assert ERROR_CODE_CATEGORIES["UDAPI100050"] is ErrorCategory.AUTH
    assert ERROR_CODE_CATEGORIES["UDAPI10005"] is ErrorCategory.RATE_LIMIT
