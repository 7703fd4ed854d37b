"""How the diagnosis reads the events frame's columns on big logs: as integer codes and arrays.

A categorical column (what ``parse_logs`` writes) gives its codes without a copy; any other
column is factorised once. Tests on the names a code stands for are made once per name, not
once per row.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa

TEXT = pd.Series(["text"]).dtype   # the dtype pandas gives a column of texts (pandas 3: str, in arrow)


def codes(s: pd.Series) -> tuple[np.ndarray, list]:
    """A column as integer codes (-1: missing) and the values they stand for. A categorical's own
    codes are given as they are (int8 for up to 127 values: cast before doing arithmetic on them)."""
    if hasattr(s, "cat"):
        return s.cat.codes.to_numpy(), list(s.cat.categories)
    c, uniques = pd.factorize(s, use_na_sentinel=True)
    return c.astype(np.int64), list(uniques)


def by_name(c: np.ndarray, names: list, labels: dict, default: int = 0) -> np.ndarray:
    """Each row's label (int8), by one lookup on its code: ``labels`` maps a label to the names it
    stands for; a row whose name is in none of them, or that has none, gets ``default``."""
    table = np.full(len(names) + 1, default, np.int8)
    for label, wanted in labels.items():
        table[:-1][[n in wanted for n in names]] = label
    return table[c]


def is_in(c: np.ndarray, names: list, wanted) -> np.ndarray:
    """The rows whose code stands for one of ``wanted`` (never a missing one)."""
    hit = np.asarray([n in wanted for n in names] + [False])
    return hit[c]


def where_at(src_codes: np.ndarray, src_names: list, lines: np.ndarray, rows) -> list[str]:
    """The ``file:line`` of ``rows``, from the source's codes and names (a missing source reads
    ``nan``, a missing line leaves the file alone): one name lookup per row, no boxing."""
    names = [str(n) for n in src_names] + ["nan"]
    return [f"{names[c]}:{int(ln)}" if ln == ln else names[c]
            for c, ln in zip(src_codes[rows].tolist(), lines[rows].tolist())]


def source_of(frame: pd.DataFrame, rows) -> pd.Categorical:
    """The ``source`` of ``rows`` (positions) of an events frame, as a categorical of its files."""
    c, names = codes(frame["source"])
    return pd.Categorical.from_codes(c[rows], categories=pd.Index(names))


def cite(frame, i: int | None = None) -> str:
    """The ``file:line`` of row ``i`` (a position) of a frame with ``source`` and ``line``, or of one
    such row (a Series): the frames keep the two apart, and a text is made only for the rows an
    evidence line cites (a missing source reads ``nan``, a missing line leaves the file alone)."""
    row = frame if i is None else frame.iloc[i]
    source, line = row["source"], row["line"]
    name = "nan" if source is None or source != source else str(source)
    return f"{name}:{int(line)}" if line == line else name


def last_of(groups: np.ndarray, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(each group, its last value), for ``groups`` given as sorted runs of equal values."""
    if not len(groups):
        return groups, values
    last = np.flatnonzero(np.r_[groups[1:] != groups[:-1], True])
    return groups[last], values[last]


def texts(pool: np.ndarray, idx: np.ndarray):
    """``pool[idx]`` (``pool``: texts, None where missing) as the column pandas makes of that list,
    built in arrow from the pool: a long column of few distinct texts costs no Python object a row.
    (A column with no text at all stays objects, as pandas leaves it.)"""
    if TEXT == object or not pd.notna(pool)[idx].any():
        return pool[idx]
    return pd.array(pa.array(pool, type=pa.large_string(), from_pandas=True).take(pa.array(idx)), dtype=TEXT)


def texts_of(values: np.ndarray):
    """An object array of texts as ``texts`` makes it, from its distinct values."""
    c, uniques = pd.factorize(values, use_na_sentinel=True)
    pool = np.asarray(list(uniques) + [None], dtype=object)
    return texts(pool, np.where(c < 0, len(uniques), c))
