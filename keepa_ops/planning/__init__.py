"""Planning: sweep a grid of configs in virtual time and choose the fixed schedule.

Owns grids, the sweep (parallel simulations), the Pareto front, the physical bound and
``choose_config``. It may import ``logs``, ``diagnosis``, ``simulation``, ``config`` and
below; not ``reports``.
"""
