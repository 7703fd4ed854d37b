"""Typed exceptions. Every keepa-ops error is a KeepaOpsError.

Invariant: no message built here contains an API key (callers pass redacted text).
"""


class KeepaOpsError(Exception):
    """Base class of every error keepa-ops raises on purpose."""


class ConfigError(KeepaOpsError, ValueError):
    """A config is invalid. The message names the field and the fix."""

    def __init__(self, field: str, problem: str, fix: str | None = None):
        self.field = field
        self.problem = problem
        self.fix = fix
        msg = f"{field}: {problem}"
        if fix:
            msg += f" Fix: {fix}"
        super().__init__(msg)


class AdmissionTimeout(KeepaOpsError, TimeoutError):
    """The gate did not admit ``task`` within the caller's timeout.

    ``retry_in``: real seconds until the gate predicts the task could be admitted (None: it
    cannot say, e.g. a more urgent task is ahead with no estimate). ``waiter``: the place the
    gate keeps for the task until then (``Gate.acquire(..., hold_place=True)``), to pass back
    as ``resume=``; None when the place was given up.
    """

    def __init__(self, task: str, cost: float, waited_s: float, retry_in: float | None, waiter: str | None):
        self.task, self.cost, self.waited_s, self.retry_in, self.waiter = task, cost, waited_s, retry_in, waiter
        when = f"; predicted in {retry_in:.3g} s" if retry_in is not None else ""
        super().__init__(f"{task}: not admitted for {cost:g} tokens within {waited_s:.3g} s{when}")


class KeepaError(KeepaOpsError):
    """An error talking to Keepa (or the fake server)."""


class NotEnoughTokens(KeepaError):
    """HTTP 429: the balance was <= 0, nothing was charged. Carries the envelope."""

    def __init__(self, envelope):
        self.envelope = envelope
        super().__init__(
            f"Keepa refused the call: not enough tokens (tokensLeft={envelope.tokens_left}, "
            f"refillIn={envelope.refill_in_ms} ms)"
        )


class KeepaRequestRejected(KeepaError):
    """HTTP 400/402/405: the request (or the key) is wrong; retrying will not help."""


class KeepaUnavailable(KeepaError):
    """Timeouts, 5xx, dropped connections or garbage bodies, after bounded retries."""


class LogParseError(KeepaOpsError):
    """A log source could not be opened at all (single bad lines are counted, not raised)."""
