"""Baseline recommenders for the evaluation protocol, each ``fit(positives, item_ids, **params) -> ScoreFn``.

``positives``: the fit set, a frame of ``user_id``, ``item_id``, ``event_timestamp``; ``item_ids``: the
candidate catalog (score columns follow its order). Every score function maps user ids ``[U]`` to float
scores ``[U, len(item_ids)]``; users absent from the fit set get the model's "no history" scores.

* ``popularity``: training positives per item.
* ``recency_popularity``: positives weighted by ``0.5 ** (age / half_life_days)``, age from the fit set's end.
* ``item_knn``: cosine item-item similarity of the binary user-item matrix, top ``neighbours`` per item;
  a user's score is the sum of similarities to their fit items.
* ``als``: implicit-feedback ALS (``implicit``), confidence ``1 + alpha``.
* ``ease``: EASE (Steck 2019), closed form ``B = I - P / diag(P)``, ``P = (XᵀX + λI)⁻¹``.
* ``genre_popularity`` / ``user_genre_popularity`` (cold start): the share of fit positives in the item's
  genres, globally or per user (shrunk towards the global share with ``prior`` pseudo-counts).
* ``random_scores``: seeded uniform scores.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

ScoreFn = Callable[[np.ndarray], np.ndarray]


class UserItemMatrix:
    """Binary CSR matrix of the fit positives: rows = fit users, columns = catalog items (``item_ids`` order)."""

    def __init__(self, positives: pd.DataFrame, item_ids: np.ndarray) -> None:
        from scipy import sparse

        self.item_ids = np.asarray(item_ids, np.int64)
        col_of = pd.Series(np.arange(len(self.item_ids)), index=self.item_ids)
        pairs = positives[["user_id", "item_id"]].drop_duplicates()
        pairs = pairs[pairs["item_id"].isin(col_of.index)]
        self.user_ids = np.unique(pairs["user_id"].to_numpy(np.int64))
        self.row_of = pd.Series(np.arange(len(self.user_ids)), index=self.user_ids)
        rows = self.row_of.reindex(pairs["user_id"].to_numpy()).to_numpy()
        cols = col_of.reindex(pairs["item_id"].to_numpy()).to_numpy()
        self.matrix = sparse.csr_matrix(
            (np.ones(len(rows), np.float32), (rows, cols)), shape=(len(self.user_ids), len(self.item_ids))
        )

    def rows(self, user_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(fit row of each user or -1, mask of users that have a row)."""
        rows = self.row_of.reindex(np.asarray(user_ids, np.int64)).fillna(-1).to_numpy(np.int64)
        return rows, rows >= 0

    def user_rows(self, user_ids: np.ndarray) -> Any:
        """The users' binary rows ``[U, M]`` (all zeros for users without fit positives), CSR."""
        from scipy import sparse

        rows, known = self.rows(user_ids)
        picked = self.matrix[np.where(known, rows, 0)]
        return sparse.diags(known.astype(np.float32)) @ picked


def _same_for_everyone(item_scores: np.ndarray) -> ScoreFn:
    def score(user_ids: np.ndarray) -> np.ndarray:
        return np.tile(item_scores, (len(user_ids), 1))

    return score


def popularity(positives: pd.DataFrame, item_ids: np.ndarray) -> ScoreFn:
    """Every user gets the item's number of fit positives."""
    counts = positives["item_id"].value_counts()
    return _same_for_everyone(counts.reindex(np.asarray(item_ids)).fillna(0).to_numpy(np.float64))


def recency_popularity(positives: pd.DataFrame, item_ids: np.ndarray, half_life_days: float = 30.0) -> ScoreFn:
    """Popularity with each positive weighted by ``0.5 ** (age_days / half_life_days)``."""
    if half_life_days <= 0:
        raise ValueError(f"half_life_days is {half_life_days}; it must be > 0.")
    times = pd.to_datetime(positives["event_timestamp"], utc=True)
    age_days = (times.max() - times).dt.total_seconds().to_numpy() / 86400.0
    weights = pd.Series(0.5 ** (age_days / half_life_days), index=positives["item_id"].to_numpy())
    scores = weights.groupby(level=0).sum().reindex(np.asarray(item_ids)).fillna(0.0)
    return _same_for_everyone(scores.to_numpy(np.float64))


def _top_n_per_row(sim: Any, n: int) -> Any:
    """Keep the ``n`` largest entries of each row of a CSR matrix."""
    sim = sim.tocsr()
    for r in range(sim.shape[0]):
        lo, hi = sim.indptr[r], sim.indptr[r + 1]
        if hi - lo > n:
            row = sim.data[lo:hi]
            row[np.argpartition(-row, n)[n:]] = 0.0
    sim.eliminate_zeros()
    return sim


def item_knn(positives: pd.DataFrame, item_ids: np.ndarray, neighbours: int = 100) -> ScoreFn:
    """Item-item cosine nearest neighbours on the binary user-item matrix."""
    from scipy import sparse

    ui = UserItemMatrix(positives, item_ids)
    x = ui.matrix
    co = (x.T @ x).tocsr().astype(np.float32)
    co.setdiag(0.0)
    co.eliminate_zeros()
    norms = np.sqrt(np.asarray(x.sum(axis=0)).ravel()) + 1e-9
    inv = sparse.diags(1.0 / norms)
    sim = _top_n_per_row(inv @ co @ inv, neighbours)  # row j: neighbours of item j

    def score(user_ids: np.ndarray) -> np.ndarray:
        return np.asarray((ui.user_rows(user_ids) @ sim.T).todense(), np.float64)

    return score


def als(
    positives: pd.DataFrame,
    item_ids: np.ndarray,
    factors: int = 64,
    regularization: float = 0.05,
    alpha: float = 10.0,
    iterations: int = 15,
    seed: int = 7,
) -> ScoreFn:
    """Implicit-feedback ALS (``implicit``); users without fit positives get zeros."""
    from implicit.cpu.als import AlternatingLeastSquares
    from threadpoolctl import threadpool_limits

    ui = UserItemMatrix(positives, item_ids)
    with threadpool_limits(1, "blas"):  # implicit runs its own threads; nested BLAS threads slow it down
        model = AlternatingLeastSquares(
            factors=factors,
            regularization=regularization,
            alpha=alpha,
            iterations=iterations,
            random_state=seed,
            num_threads=0,
        )
        model.fit(ui.matrix, show_progress=False)
    users, items = np.asarray(model.user_factors), np.asarray(model.item_factors)

    def score(user_ids: np.ndarray) -> np.ndarray:
        rows, known = ui.rows(user_ids)
        out = users[np.where(known, rows, 0)] @ items.T
        out[~known] = 0.0
        return out.astype(np.float64)

    return score


def ease(positives: pd.DataFrame, item_ids: np.ndarray, l2: float = 500.0) -> ScoreFn:
    """EASE over the items that have fit positives (others score 0)."""
    if l2 <= 0:
        raise ValueError(f"EASE l2 is {l2}; it must be > 0.")
    ui = UserItemMatrix(positives, item_ids)
    active = np.flatnonzero(np.asarray(ui.matrix.sum(axis=0)).ravel() > 0)
    x = ui.matrix[:, active]
    gram = np.asarray((x.T @ x).todense(), np.float64)
    gram[np.diag_indices_from(gram)] += l2
    p = np.linalg.inv(gram)
    b = -p / np.diag(p)
    b[np.diag_indices_from(b)] = 0.0

    def score(user_ids: np.ndarray) -> np.ndarray:
        out = np.zeros((len(user_ids), len(ui.item_ids)))
        out[:, active] = np.asarray(ui.user_rows(user_ids)[:, active] @ b)
        return out

    return score


def random_scores(positives: pd.DataFrame, item_ids: np.ndarray, seed: int = 0) -> ScoreFn:
    """Seeded uniform random scores (a fresh draw per call, reproducible per seed and call order)."""
    rng = np.random.default_rng(seed)

    def score(user_ids: np.ndarray) -> np.ndarray:
        return rng.random((len(user_ids), len(item_ids)))

    return score


def _genre_matrix(item_ids: np.ndarray, item_genres: Mapping[int, Sequence[str]]) -> tuple[np.ndarray, list[str]]:
    """Row-normalised item x genre membership ``[M, G]`` (an item's genres share weight 1)."""
    genres = sorted({g for gs in item_genres.values() for g in gs})
    col = {g: j for j, g in enumerate(genres)}
    member = np.zeros((len(item_ids), len(genres)))
    for r, item in enumerate(np.asarray(item_ids, np.int64)):
        gs = [col[g] for g in item_genres.get(int(item), ()) if g in col]
        if gs:
            member[r, gs] = 1.0 / len(gs)
    return member, genres


def _genre_counts(positives: pd.DataFrame, item_genres: Mapping[int, Sequence[str]], genres: list[str]) -> Any:
    """Per user, fit positives per genre (an item's genres share one count) ``DataFrame[user x genre]``."""
    rows = [
        (int(u), g, 1.0 / len(item_genres[int(i)]))
        for u, i in zip(positives["user_id"], positives["item_id"], strict=True)
        if item_genres.get(int(i))
        for g in item_genres[int(i)]
    ]
    frame = pd.DataFrame(rows, columns=["user_id", "genre", "w"])
    return frame.pivot_table(index="user_id", columns="genre", values="w", aggfunc="sum").reindex(
        columns=genres, fill_value=0.0
    )


def genre_popularity(
    positives: pd.DataFrame, item_ids: np.ndarray, item_genres: Mapping[int, Sequence[str]]
) -> ScoreFn:
    """Every user gets the item's genres' share of all fit positives (mean over the item's genres)."""
    member, genres = _genre_matrix(item_ids, item_genres)
    share = _genre_counts(positives, item_genres, genres).fillna(0.0).sum(axis=0).to_numpy()
    return _same_for_everyone(member @ (share / max(share.sum(), 1e-12)))


def user_genre_popularity(
    positives: pd.DataFrame, item_ids: np.ndarray, item_genres: Mapping[int, Sequence[str]], prior: float = 5.0
) -> ScoreFn:
    """The user's own genre shares of their fit positives, shrunk to the global share by ``prior`` counts."""
    member, genres = _genre_matrix(item_ids, item_genres)
    counts = _genre_counts(positives, item_genres, genres).fillna(0.0)
    total = counts.sum(axis=0).to_numpy()
    global_share = total / max(total.sum(), 1e-12)

    def score(user_ids: np.ndarray) -> np.ndarray:
        own = counts.reindex(np.asarray(user_ids, np.int64)).fillna(0.0).to_numpy()
        shares = (own + prior * global_share) / (own.sum(axis=1, keepdims=True) + prior)
        return shares @ member.T

    return score
