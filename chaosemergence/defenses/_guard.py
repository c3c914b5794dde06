"""One guarded dependency call: breaker -> adaptive throttle -> retry with budget -> the call.

The composition every outgoing call of a service needs, in the order that keeps each layer
honest: the breaker outermost, so it sees one outcome per logical call (retries exhausted
or not) and rejects without touching the throttle while open; the throttle next, so one
logical call is one request to it whatever the retries; the retry policy (with its budget)
innermost, right around the call. A fallback answers whatever the guard does not.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from typing import Any, ParamSpec, TypeVar

from ._breaker import CircuitBreaker
from ._errors import DefenseError, LoadShedError
from ._retry import RetryPolicy
from ._throttle import AdaptiveThrottle

__all__ = ["Fallback", "Guard"]

P = ParamSpec("P")
R = TypeVar("R")
#: What answers a call the guard refused or that failed: gets the error, returns the answer.
Fallback = Callable[[BaseException], Awaitable[Any]]


class Guard:
    """Breaker -> throttle -> retry (with its budget) -> the call, with an optional fallback.

    Every layer is optional (``None`` leaves it out) and keeps its own ``enabled`` switch,
    so a service can turn one off at run time (the negative control) without rebuilding
    the guard. The fallback answers:

    - a refusal by a defense: the open breaker (``CircuitOpenError``) or the throttle
      (``LoadShedError``);
    - a failed call (retries exhausted), through the breaker while it is on, or directly
      when the guard has no breaker. A breaker that is switched off (``enabled=False``)
      stands for "no breaker and no fallback for errors", the naive client: failures
      propagate, refusals by the other layers still fall back.

    Without a fallback, refusals and failures raise. ``await guard.call(fn, *args)`` runs
    ``fn(*args)`` under the guard; ``@guard`` wraps a coroutine function; ``guard.run``
    takes a zero-argument coroutine function and a per-call fallback.
    """

    def __init__(
        self,
        *,
        name: str = "guard",
        breaker: CircuitBreaker | None = None,
        throttle: AdaptiveThrottle | None = None,
        retry: RetryPolicy | None = None,
        fallback: Fallback | None = None,
        on_throttled: Callable[[LoadShedError], None] | None = None,
        on_fallback: Callable[[BaseException], None] | None = None,
    ) -> None:
        self.name = name
        self.breaker = breaker
        self.throttle = throttle
        self.retry = retry
        self.fallback = fallback
        self._on_throttled = on_throttled
        self._on_fallback = on_fallback
        self.calls = 0  # every call under the guard
        self.throttled = 0  # calls the throttle refused locally
        self.fallbacks = 0  # calls answered by the fallback

    async def call(self, fn: Callable[P, Awaitable[R]], /, *args: P.args, **kwargs: P.kwargs) -> R:
        """Run ``fn(*args, **kwargs)`` under the guard, with the guard's fallback."""
        return await self.run(functools.partial(fn, *args, **kwargs))

    def __call__(self, fn: Callable[P, Awaitable[R]]) -> Callable[P, Awaitable[R]]:
        """Use the guard as a decorator: every call of ``fn`` goes through it."""

        @functools.wraps(fn)
        async def guarded(*args: P.args, **kwargs: P.kwargs) -> R:
            return await self.run(functools.partial(fn, *args, **kwargs))

        guarded.guard = self  # type: ignore[attr-defined]
        return guarded

    async def run(
        self, operation: Callable[[], Awaitable[R]], *, fallback: Fallback | None = None
    ) -> R:
        """Run ``operation()`` under the guard; ``fallback`` replaces the guard's for this call."""
        self.calls += 1
        serve = fallback if fallback is not None else self.fallback
        layered = self._layered(operation)
        breaker = self.breaker
        if breaker is not None and breaker.enabled:
            if serve is None:
                return await breaker.call(layered)
            # The breaker always hands its fallback the error (rejection or failure).
            return await breaker.call(layered, functools.partial(self._serve, serve))
        # No breaker, or a breaker switched off: refusals fall back; failures fall back only
        # when there is no breaker at all (off stands for the naive client).
        try:
            return await layered()
        except DefenseError as error:
            if serve is None:
                raise
            return await self._serve(serve, error)  # type: ignore[no-any-return]
        except Exception as error:
            if serve is None or breaker is not None:
                raise
            return await self._serve(serve, error)  # type: ignore[no-any-return]

    def _layered(self, operation: Callable[[], Awaitable[R]]) -> Callable[[], Awaitable[R]]:
        """``operation`` wrapped in the retry policy, then in the throttle."""
        retry, throttle = self.retry, self.throttle
        inner = operation if retry is None else functools.partial(retry.run, operation)
        if throttle is None:
            return inner

        async def throttled() -> R:
            try:
                return await throttle.call(inner)
            except LoadShedError as error:
                if error.defense == throttle.name:
                    self.throttled += 1
                    if self._on_throttled is not None:
                        self._on_throttled(error)
                raise

        return throttled

    async def _serve(self, serve: Fallback, error: BaseException | None) -> Any:
        assert error is not None  # the breaker passes the rejection or the failure
        self.fallbacks += 1
        if self._on_fallback is not None:
            self._on_fallback(error)
        return await serve(error)

    def reset(self) -> None:
        """Zero the guard's counters (the layers keep theirs: reset them on their own)."""
        self.calls = self.throttled = self.fallbacks = 0

    def snapshot(self) -> dict[str, object]:
        """The guard's counters and each layer's snapshot, as JSON-able data."""
        return {
            "name": self.name,
            "calls": self.calls,
            "throttled": self.throttled,
            "fallbacks": self.fallbacks,
            "breaker": self.breaker.snapshot() if self.breaker is not None else None,
            "throttle": self.throttle.snapshot() if self.throttle is not None else None,
            "retry": self.retry.snapshot() if self.retry is not None else None,
        }
