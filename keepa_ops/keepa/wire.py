"""Keepa wire facts shared by the client, the fake server and the model.

Invariant: an ``Envelope`` is exactly what every Keepa response carries
(errors and 429s included); ``Response.consumed`` is what the call was charged.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NamedTuple

PAGE_SIZE = 150  # Keepa: up to 150 deals per /deal page; a shorter page is the last
KEEPA_EPOCH_MINUTES = 21564000  # unix_ms = (keepa_minutes + 21564000) * 60000


def keepa_minutes_to_unix(km: float) -> float:
    return (km + KEEPA_EPOCH_MINUTES) * 60.0


def unix_to_keepa_minutes(unix_s: float) -> int:
    return int(unix_s // 60) - KEEPA_EPOCH_MINUTES


class DealRef(NamedTuple):
    """A deal as the watermark sees it; ordered by (last_update, asin)."""

    last_update: float
    asin: str


@dataclass(slots=True)
class Envelope:
    tokens_left: float
    refill_in_ms: float
    refill_rate: float
    consumed: float
    timestamp_ms: float = 0.0
    token_flow_reduction: float = 0.0

    @classmethod
    def from_json(cls, body: dict) -> "Envelope":
        return cls(
            tokens_left=float(body["tokensLeft"]),
            refill_in_ms=float(body.get("refillIn", 0)),
            refill_rate=float(body["refillRate"]),
            consumed=float(body.get("tokensConsumed", 0)),
            timestamp_ms=float(body.get("timestamp", 0)),
            token_flow_reduction=float(body.get("tokenFlowReduction", 0.0)),
        )

    def to_json(self, processing_ms: float = 0.0) -> dict:
        """The envelope fields of a Keepa response body (whole numbers where Keepa sends them)."""
        rate = self.refill_rate
        return {"timestamp": int(self.timestamp_ms), "tokensLeft": int(self.tokens_left),
                "refillIn": int(self.refill_in_ms), "refillRate": int(rate) if rate == int(rate) else rate,
                "tokenFlowReduction": self.token_flow_reduction, "tokensConsumed": int(self.consumed),
                "processingTimeInMs": int(processing_ms)}


@dataclass(slots=True)
class Response:
    """``items`` are DealRefs (a deal page) or product rows (a product batch)."""

    items: list[Any]
    consumed: float
    envelope: Envelope | None = None
