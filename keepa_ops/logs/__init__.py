"""Logs: production logs into token events, and legacy logs out of simulated incidents.

Owns the log sources (files, folders, rotation, compression), the line scanner (C, with a
pure-Python reference), the templates and the parser that builds the events frame, the
legacy log writer, and the incidents it re-enacts. It may import ``diagnosis`` (run
attribution for ``ParsedLog.waits``), ``simulation``, ``config``, ``core`` and below.
"""
