"""A planted item catalog shared by the training and serving tests: two topics of ten items each."""

from __future__ import annotations

import numpy as np
import pandas as pd


def planted_items(text_dim: int = 8) -> pd.DataFrame:
    """Items 100-109 are topic A, 110-119 topic B: text vectors near two orthogonal directions."""
    rng = np.random.default_rng(0)
    centres = np.eye(text_dim, dtype=np.float32)[:2]
    vectors = [centres[i // 10] + 0.3 * rng.normal(size=text_dim).astype(np.float32) for i in range(20)]
    return pd.DataFrame(
        {
            "item_id": np.arange(100, 120, dtype=np.int64),
            "embedding": [v / np.linalg.norm(v) for v in vectors],
            "item_clicks_28d": rng.integers(0, 50, 20).astype(float),
        }
    )
