"""A feed: one data source polled on its own interval, at most one poll in flight, with a timeout, keeping the
last good value (marked stale) when a poll fails. No Textual here: the app schedules `poll()` in a worker."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

T = TypeVar("T")


@dataclass
class Feed(Generic[T]):
    """The latest value of one source and how fresh it is."""

    name: str
    fetch: Callable[[], Awaitable[T]]
    interval_s: float
    timeout_s: float
    clock: Callable[[], float] = time.monotonic
    value: T | None = None
    updated_at: float | None = None  # when `value` last came in, by `clock`
    error: str | None = None  # why the latest poll failed; None after a good one
    in_flight: bool = field(default=False, init=False)
    polls: int = field(default=0, init=False)

    async def poll(self) -> bool:
        """Fetch once unless a fetch is already running; whether there is something new to show."""
        if self.in_flight:
            return False
        self.in_flight = True
        self.polls += 1
        try:
            value = await asyncio.wait_for(self.fetch(), self.timeout_s)
        except TimeoutError:
            self.error = f"{self.name}: no answer within {self.timeout_s:g} s"
            return True
        except Exception as err:  # any source failure is shown, never raised into the app
            self.error = f"{self.name}: {err}"
            return True
        finally:
            self.in_flight = False
        self.value, self.updated_at, self.error = value, self.clock(), None
        return True

    def age_s(self) -> float | None:
        """Seconds since the last good value, or None if there never was one."""
        return None if self.updated_at is None else self.clock() - self.updated_at

    @property
    def stale(self) -> bool:
        """The shown value is not current: the last poll failed, or good values stopped coming."""
        age = self.age_s()
        return self.error is not None or (age is not None and age > 3 * self.interval_s + self.timeout_s)

    def mark(self) -> str:
        """A short staleness mark for a panel title: '' when fresh."""
        if not self.stale:
            return ""
        age = self.age_s()
        return " ⚠ no data yet" if age is None else f" ⚠ stale {age:.0f} s"
