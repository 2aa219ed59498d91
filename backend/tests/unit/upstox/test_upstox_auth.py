"""OAuth helpers and the access token's 03:30 IST expiry rule."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime
from urllib.parse import parse_qs, urlsplit
from zoneinfo import ZoneInfo

import pytest
from pydantic import SecretStr

from upstox_bot.upstox.auth import (
    TokenGrant,
    UpstoxOAuth,
    access_token_expiry,
    jwt_expiry,
    new_state,
    states_match,
    token_expiry,
)
from upstox_bot.upstox.errors import UpstoxAuthError

IST = ZoneInfo("Asia/Kolkata")


def jwt(claims: dict[str, object]) -> str:
    def part(obj: dict[str, object]) -> str:
        return base64.urlsafe_b64encode(json.dumps(obj).encode()).rstrip(b"=").decode()

    return f"{part({'alg': 'HS256'})}.{part(claims)}.c2ln"


@pytest.mark.parametrize(
    ("issued", "expected"),
    [
        # made 20:00 Tue -> dies 03:30 Wed
        (datetime(2026, 1, 6, 20, 0, tzinfo=IST), datetime(2026, 1, 7, 3, 30, tzinfo=IST)),
        # made 02:30 Wed -> dies 03:30 the same Wed
        (datetime(2026, 1, 7, 2, 30, tzinfo=IST), datetime(2026, 1, 7, 3, 30, tzinfo=IST)),
        # made exactly at 03:30 -> the next day's 03:30
        (datetime(2026, 1, 7, 3, 30, tzinfo=IST), datetime(2026, 1, 8, 3, 30, tzinfo=IST)),
        # made 08:00 IST given in UTC (02:30 UTC) -> 03:30 IST next day
        (datetime(2026, 1, 7, 2, 30, tzinfo=UTC), datetime(2026, 1, 8, 3, 30, tzinfo=IST)),
        # 23:00 UTC on the 6th is 04:30 IST on the 7th -> 03:30 IST on the 8th
        (datetime(2026, 1, 6, 23, 0, tzinfo=UTC), datetime(2026, 1, 8, 3, 30, tzinfo=IST)),
    ],
)
def test_token_expiry_is_next_0330_ist(issued: datetime, expected: datetime) -> None:
    expiry = token_expiry(issued)
    assert expiry == expected
    assert expiry.tzinfo is not None


def test_token_expiry_refuses_naive_time() -> None:
    with pytest.raises(ValueError, match="aware"):
        token_expiry(datetime(2026, 1, 6, 20, 0))  # noqa: DTZ001


def test_jwt_exp_is_read() -> None:
    token = jwt({"sub": "AB123", "exp": 1767737400, "iss": "udapi-gateway-service"})
    assert jwt_expiry(token) == datetime.fromtimestamp(1767737400, tz=UTC)
    issued = datetime(2026, 1, 6, 12, 0, tzinfo=IST)
    assert access_token_expiry(token, issued) == datetime.fromtimestamp(1767737400, tz=UTC)


@pytest.mark.parametrize(
    "token", ["not-a-jwt", "a.b.c", jwt({"sub": "x"}), jwt({"exp": "soon"}), jwt({"exp": True})]
)
def test_unreadable_jwt_falls_back_to_rule(token: str) -> None:
    assert jwt_expiry(token) is None
    issued = datetime(2026, 1, 6, 20, 0, tzinfo=IST)
    assert access_token_expiry(token, issued) == datetime(2026, 1, 7, 3, 30, tzinfo=IST)


def test_authorization_url_carries_encoded_params() -> None:
    oauth = UpstoxOAuth(
        client_id="key 1",
        client_secret=SecretStr("secret"),
        redirect_uri="http://127.0.0.1:8000/api/v1/auth/upstox/callback?x=1",
        api_base_url="https://api.upstox.com/",
    )
    url = oauth.authorization_url("st&ate")
    parts = urlsplit(url)
    assert f"{parts.scheme}://{parts.netloc}{parts.path}" == (
        "https://api.upstox.com/v2/login/authorization/dialog"
    )
    query = parse_qs(parts.query)
    assert query == {
        "response_type": ["code"],
        "client_id": ["key 1"],
        "redirect_uri": ["http://127.0.0.1:8000/api/v1/auth/upstox/callback?x=1"],
        "state": ["st&ate"],
    }
    assert "secret" not in url
    assert "secret" not in repr(oauth)


def test_states_match_only_exact_value() -> None:
    state = new_state()
    assert len(state) >= 32
    assert new_state() != state
    assert states_match(state, state)
    assert not states_match(state, state + "x")
    assert not states_match(state, None)
    assert not states_match(state, "")


def test_token_grant_parses_profile_and_hides_token() -> None:
    token = jwt({"exp": 1767737400})
    issued = datetime(2026, 1, 6, 12, 0, tzinfo=IST)
    grant = TokenGrant.from_api(
        {
            "access_token": token,
            "user_id": "AB123",
            "exchanges": ["NSE", "NFO"],
            "products": ["I", "D"],
            "is_active": True,
            "email": "a***@x.com",
        },
        issued_at=issued,
    )
    assert grant.access_token.get_secret_value() == token
    assert token not in repr(grant)
    assert grant.user_id == "AB123"
    assert grant.exchanges == ("NSE", "NFO")
    assert grant.extended_token is None
    assert grant.expires_at == datetime.fromtimestamp(1767737400, tz=UTC)


def test_token_grant_without_token_is_auth_error() -> None:
    with pytest.raises(UpstoxAuthError, match="no access_token"):
        TokenGrant.from_api({"user_id": "AB123"}, issued_at=datetime(2026, 1, 6, tzinfo=IST))
