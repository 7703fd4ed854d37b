"""The engine core: one scheduler for both clocks.

Owns the clocks (virtual and real), schedules, admission policies, the engine that
grants tokens to task runs, the two tasks (Upserter, Backfiller), the event log, and the
interfaces (``typing.Protocol``) of what the engine drives: a Clock, a Transport, a Store.
It may import ``keepa`` (the bucket math and wire types) and ``errors``, and ``config``
only for type hints; never ``live``, ``simulation``, ``gate``, ``logs``, ``diagnosis``,
``planning`` or ``reports``, and never pandas at import time.
"""
