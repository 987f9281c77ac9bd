"""A circuit breaker around the model server.

closed --(``failures`` consecutive failures)--> open --(``reset_s`` later)--> half_open
half_open --(trial call succeeds)--> closed;  half_open --(trial fails)--> open again.

While open, :meth:`allow` is False and callers do not wait on a dead server: the event goes on
as ``unverified`` (policy ``cloud.on_model_unavailable``). One trial call at a time is let
through in half-open. The clock is passed in, so the state machine is tested without sleeping.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Literal

from pipeline.metrics import Registry

State = Literal["closed", "open", "half_open"]
_STATE_VALUE: dict[State, float] = {"closed": 0.0, "half_open": 1.0, "open": 2.0}


class CircuitBreaker:
    def __init__(
        self,
        failures: int,
        reset_s: float,
        clock: Callable[[], float] = time.monotonic,
        metrics: Registry | None = None,
        name: str = "model_server",
    ) -> None:
        self.failures = failures
        self.reset_s = reset_s
        self._clock = clock
        self._metrics = metrics
        self._name = name
        self._state: State = "closed"
        self._consecutive = 0
        self._opened_at = 0.0
        self._trial_in_flight = False
        self.opened_count = 0
        self.rejected_count = 0

    @property
    def state(self) -> State:
        if self._state == "open" and self._clock() - self._opened_at >= self.reset_s:
            self._set("half_open")
        return self._state

    def allow(self) -> bool:
        """May a call go out now? In half-open, only one trial call at a time."""
        state = self.state
        if state == "closed":
            return True
        if state == "half_open" and not self._trial_in_flight:
            self._trial_in_flight = True
            return True
        self.rejected_count += 1
        if self._metrics:
            self._metrics.inc("cloud_breaker_rejected_total", help="Calls refused by an open circuit.")
        return False

    def record_success(self) -> None:
        self._consecutive = 0
        self._trial_in_flight = False
        if self._state != "closed":
            self._set("closed")

    def record_failure(self) -> None:
        self._consecutive += 1
        was_trial = self._trial_in_flight
        self._trial_in_flight = False
        if (self._state == "half_open" and was_trial) or self._consecutive >= self.failures:
            if self._state != "open":
                self.opened_count += 1
                if self._metrics:
                    self._metrics.inc("cloud_breaker_opened_total", help="Times the circuit opened.")
            self._opened_at = self._clock()
            self._set("open")

    def _set(self, state: State) -> None:
        self._state = state
        if self._metrics:
            self._metrics.set(
                "cloud_breaker_state",
                _STATE_VALUE[state],
                help="0 closed, 1 half-open, 2 open.",
            )
