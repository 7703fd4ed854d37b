"""The shared bucket: one Keepa key's tokens and admission policy across processes and hosts.

Owns the ledger (Keepa's meter and the policies as functions over one small state, in
integer milli-tokens and microseconds; ``ledger.lua`` is its mirror for Redis), the
three backends that keep that state (this process, an SQLite file, Redis), the ``Gate``
that code outside keepa-ops calls (``acquire`` / ``settle``, sync and async), and the
engine's policy when the bucket is shared (``SharedAdmission``).

It may import ``core`` (policies, for the engine's policy interface and the admission
target), ``keepa`` (wire types), ``config`` and ``errors``; never ``live``,
``simulation``, ``logs``, ``diagnosis``, ``planning`` or ``reports``.
"""
from .backends import GateUnavailable
from .gate import Gate, Permit

__all__ = ["Gate", "Permit", "GateUnavailable"]
