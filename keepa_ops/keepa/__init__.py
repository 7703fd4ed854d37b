"""Keepa's rules, shared by every Keepa keepa-ops talks to or imitates.

Owns the token bucket math, the meter (Keepa's price list, admission while the balance
is > 0, a 429 at <= 0, the envelope), the deterministic deal stream both the simulated
Keepa and the embedded fake server serve, the wire types (``DealRef``, ``Envelope``,
``Response``) and the HTTP client. It imports only ``errors`` (and ``requests`` in the
client): everything else in keepa-ops may build on it.
"""
