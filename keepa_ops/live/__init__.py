"""Live: the engine on the real clock, over HTTP, into SQLite.

Owns the HTTP transport, the SQLite deals store, the runner (signals, progress, the
event file) and the embedded fake Keepa server. It may import ``core``, ``keepa``,
``config`` and ``errors``; not ``simulation`` (the other clock), nor anything above.
"""
