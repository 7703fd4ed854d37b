"""How the diagnosis reads the events frame's text columns on big logs: as integer codes.

A categorical column (what ``parse_logs`` writes) gives its codes without a copy; any other
column is factorised once. Tests on the names a code stands for are made once per name, not
once per row.
"""
from __future__ import annotations

import numpy as np
import pandas as pd


def codes(s: pd.Series) -> tuple[np.ndarray, list]:
    """A column as int64 codes (-1: missing) and the values they stand for."""
    if hasattr(s, "cat"):
        return s.cat.codes.to_numpy().astype(np.int64), list(s.cat.categories)
    c, uniques = pd.factorize(s, use_na_sentinel=True)
    return c.astype(np.int64), list(uniques)


def is_in(c: np.ndarray, names: list, wanted) -> np.ndarray:
    """The rows whose code stands for one of ``wanted`` (never a missing one)."""
    hit = np.asarray([n in wanted for n in names] + [False])
    return hit[c]


def where_of(frame: pd.DataFrame) -> list[str]:
    """Each row's ``file:line``, from the source's codes: one name lookup per row, no boxing."""
    c, names = codes(frame["source"])
    names = [str(n) for n in names] + ["nan"]
    return [f"{names[k]}:{ln}" for k, ln in zip(c.tolist(), frame["line"].to_numpy().astype(np.int64).tolist())]
