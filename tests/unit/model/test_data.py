"""Training inputs: recent items strictly before each interaction, padding, per-user latest history."""

from __future__ import annotations

import numpy as np
import pandas as pd

from recsys.model.data import pad_recent, recent_before_each, recent_items_by_user


def _frame() -> pd.DataFrame:
    times = pd.to_datetime(["2024-01-01", "2024-01-02", "2024-01-02", "2024-01-03", "2024-01-01"], utc=True)
    return pd.DataFrame({"user_id": [1, 1, 1, 1, 2], "item_id": [10, 20, 30, 40, 50], "event_timestamp": times})


def test_recent_before_each_is_point_in_time_and_newest_first() -> None:
    out = recent_before_each(_frame(), 2)
    # rows 1 and 2 share a timestamp: neither sees the other; row 3 sees both, newest (by row order) first.
    np.testing.assert_array_equal(out, [[-1, -1], [10, -1], [10, -1], [30, 20], [-1, -1]])


def test_recent_items_by_user_and_padding() -> None:
    assert recent_items_by_user(_frame(), 3) == {1: [40, 30, 20], 2: [50]}
    np.testing.assert_array_equal(pad_recent([[1, 2, 3], None, []], 2), [[1, 2], [-1, -1], [-1, -1]])
