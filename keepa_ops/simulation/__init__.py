"""Simulation: the engine on a virtual clock against the simulated Keepa.

Owns the simulated Keepa (the shared meter and deal stream, called in-process), the
in-memory store, and ``simulate`` with its ``SimResult``. It may import ``core``,
``keepa``, ``config`` and ``errors``; not ``live`` (the other clock), nor anything above.
"""
