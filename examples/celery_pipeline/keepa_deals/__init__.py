"""A small Celery deals pipeline shaped like the legacy one keepa-ops was made for.

An Upserter (``simple_task.update_recent_deals``, every minute) and a Backfiller
(``backfiller.backfill_deals``, continuous) call Keepa for deals and products and store them
in SQLite. In ``legacy`` mode they ask the seed's threshold ``TokenManager``; in ``gated`` mode
their Keepa calls go through keepa-ops' shared gate (``keepa_ops.celery.GatedTask``).
"""
