"""The dataset fingerprint in every model's metadata: stable, content-sensitive, list columns included."""

from __future__ import annotations

import numpy as np
import pandas as pd

from recsys.pipeline import fingerprint


def test_list_columns_hash_by_content_whatever_their_container() -> None:
    as_lists = pd.DataFrame({"user_id": [1, 2], "recent_item_ids": [[10, 11], []]})
    as_arrays = as_lists.assign(recent_item_ids=[np.array([10, 11]), np.array([], np.int64)])  # as Parquet reads
    reordered = as_lists.assign(recent_item_ids=[[11, 10], []])

    assert fingerprint(as_lists) == fingerprint(as_arrays) == fingerprint(as_lists.copy())
    assert fingerprint(as_lists) != fingerprint(reordered)  # order is part of a newest-first history
    assert len(fingerprint(as_lists)) == 16
