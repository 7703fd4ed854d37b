"""Admission to Keepa in either mode: the few lines a legacy task changes to go through keepa-ops."""
from contextlib import contextmanager

from celery.exceptions import Retry

from . import keepa_api, token_manager
from .celery_app import GATED


@contextmanager
def tokens(task, cost: float):
    """Calls of about ``cost`` tokens in all; yields ``settle(body)``, for each call's JSON body.

    legacy: the run has already asked the TokenManager; settling syncs its estimate.
    gated:  waits in keepa-ops' gate (past the hold bound: a retry for the predicted admission);
            settling tells the gate what Keepa answered."""
    if GATED:
        with task.keepa(cost) as permit:
            settle = permit.settle
            try:
                yield settle
            except keepa_api.TokensExhausted as e:
                settle(e.body)
                raise
    else:
        def settle(body):
            token_manager.sync_tokens(body["tokensLeft"])
        try:
            yield settle
        except keepa_api.TokensExhausted as e:
            settle(e.body)
            raise


__all__ = ["tokens", "Retry", "GATED"]
