"""Shapes of the Upstox login routes. No token is ever part of a response."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, Field


class UpstoxLoginRead(BaseModel):
    """The outcome of a completed Upstox login."""

    logged_in: bool = True
    user_id: str = Field(description="Upstox client id (UCC) of the account that logged in.")
    user_name: str
    expires_at: datetime = Field(description="When the token dies (03:30 IST after the login).")
    detail: str


class UpstoxLoginLinkRead(BaseModel):
    """A one-time link that starts the Upstox login in the browser that opens it."""

    url: str = Field(description="Open it in the browser; it works once.")
    expires_at: datetime = Field(description="It stops working then (ten minutes).")


class UpstoxTokenStatusRead(BaseModel):
    """The token the bot trades with: whether it is usable, from where, until when."""

    state: str = Field(description="valid, expiring, expired or missing.")
    entries_allowed: bool = Field(description="False pauses new entries (exits still run).")
    source: str | None = Field(None, description="login (stored) or environment.")
    expires_at: datetime | None = None
    user_id: str = ""
    reason: str = ""
    login_url: str = Field(description="Where to log in again.")
