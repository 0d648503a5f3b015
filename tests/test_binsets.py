"""pixnet.geometry.binsets: numpy's isin and unique on packed (row, col) keys, by either path."""

import numpy as np
import pytest

from pixnet.geometry import binsets
from pixnet.geometry.binsets import isin, pack, unique, unpack

# a set filling its box (a capture area: the bitmap) and one spread over a million rows (the sort)
SPREADS = {"dense": 50, "far-flung": 10**6}


@pytest.mark.parametrize("spread", SPREADS)
def test_isin_and_unique_are_numpys(spread):
    """Keys below, among, between and above the set, negative rows and columns, repeats, unsorted; empty sets."""
    rng = np.random.default_rng(7)
    n = SPREADS[spread]
    of = pack(rng.integers(-n, n, 5000), rng.integers(-50, 50, 5000))
    keys = np.concatenate([of[::3], pack(rng.integers(-n - 10, n + 10, 3000), rng.integers(-60, 60, 3000))])
    assert (binsets._bitmap(of) is not None) == (spread == "dense")  # each path is the one meant
    got = isin(keys, of)
    assert 0 < got.sum() < len(keys)
    np.testing.assert_array_equal(got, np.isin(keys, of))
    np.testing.assert_array_equal(unique(of), np.unique(of))
    assert not isin(keys, of[:0]).any() and isin(keys[:0], of).shape == (0,)
    assert unique(of[:0]).shape == (0,)


def test_pack_orders_by_row_then_column_and_unpacks():
    rows, cols = np.array([-3, -3, 0, 2, 2**30]), np.array([5, -2**31 + 1, 0, -7, 2**31 - 1])
    keys = pack(rows, cols)
    order = np.lexsort((cols, rows))
    np.testing.assert_array_equal(np.argsort(keys, kind="stable"), order)
    r, c = unpack(keys)
    np.testing.assert_array_equal(r, rows)
    np.testing.assert_array_equal(c, cols)
