"""A local simulator of the Upstox API (REST here, the market feed in .feed) for tests."""

from __future__ import annotations

from collections.abc import Iterator

from .app import UpstoxSimulator, build_app
from .rest import Fault, FaultKind, RestSimulator, SimOrder, sample_instruments
from .scenario import Scenario

__all__ = [
    "Fault",
    "FaultKind",
    "RestSimulator",
    "Scenario",
    "SimOrder",
    "UpstoxSimulator",
    "build_app",
    "sample_instruments",
    "upstox_simulator",
]


def upstox_simulator() -> Iterator[UpstoxSimulator]:
    """Fixture body: a started simulator, stopped afterwards.

    Register it in a conftest with ``upstox_sim = pytest.fixture(upstox_simulator)``.
    """
    with UpstoxSimulator() as sim:
        yield sim
