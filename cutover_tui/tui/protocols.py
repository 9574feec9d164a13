"""What the console needs from things outside the engine that only some runs have.

The demo's traffic switch satisfies `TrafficPanel`; the console never imports the demo.
"""

from __future__ import annotations

from typing import Protocol


class TrafficFigures(Protocol):
    requests: int
    errors: int
    requests_per_second: float
    mirror_failures: int | None  # None when the API's own count could not be read


class TrafficPanel(Protocol):
    """A switch for live traffic against the API, and its figures; every call may block briefly."""

    rate: float
    base_url: str

    @property
    def running(self) -> bool: ...

    def toggle(self) -> bool:
        """Starts or stops the traffic; true when now running."""
        ...

    def stats(self) -> TrafficFigures | None: ...

    def stop(self) -> None: ...
