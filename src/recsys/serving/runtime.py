"""The online recommender: a model (``Recommender``), the online store's rows (``OnlineRows``) behind a circuit
breaker, and a batcher that serves concurrent requests with one store read per batch.

No BentoML here: the bento (``bentos/recommender``) wraps this class, tests call it directly.
Request path: one batched read of the users' rows from the store Feast materialized -> the user vector (numpy
tower) -> one item-matrix product per user -> top k without the user's seen items. With the store down (or the
breaker open) a request is answered from popularity with ``degraded: true`` in microseconds.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from recsys.errors import FeatureStoreError
from recsys.serving.breaker import CircuitBreaker
from recsys.serving.online import OnlineRows, UserRow
from recsys.serving.recommender import (
    MAX_EXCLUDED,
    MAX_SCORED,
    REASON_NO_FEATURES,
    REASON_STORE_UNAVAILABLE,
    Recommendation,
    Recommender,
    validate_id,
    validate_ids,
    validate_k,
)

log = logging.getLogger(__name__)

WARN_EVERY_S = 10.0
REBIND_EVERY_S = 30.0


@dataclass(frozen=True)
class RecommendRequest:
    """One user's request, validated (``check``) before it joins a batch."""

    user_id: int
    k: int = 10
    exclude_seen: bool = True
    exclude_item_ids: tuple[int, ...] = ()

    def check(self) -> RecommendRequest:
        validate_id(self.user_id)
        validate_k(self.k)
        validate_ids(self.exclude_item_ids, "exclude_item_id", MAX_EXCLUDED)
        return self


@dataclass(frozen=True)
class Scored:
    """Scores of a caller's candidates for one user (None when the model cannot score this user)."""

    user_id: int
    item_ids: list[int]
    scores: list[float] | None
    model_version: str
    degraded: bool
    reason: str | None = None


class OnlineRecommender:
    """Answers requests from a model and the online store; thread-safe, one instance per worker."""

    def __init__(
        self,
        recommender: Recommender,
        rows: OnlineRows | None,
        breaker: CircuitBreaker,
        feature_service: str,
        api_key: str | None = None,
    ) -> None:
        self.recommender = recommender
        self.rows = rows
        self.breaker = breaker
        self.feature_service = feature_service
        self.api_key = api_key
        self.store_answered = False
        self.binding: Any = None  # recsys.serving.startup.Binding, set at start
        # Started with degraded_ok on a bad binding: answer from the fallback until ``rebind()`` finds no problem.
        self.rebind: Callable[[], list[str]] | None = None
        self.unbound: list[str] = []
        self._next_rebind = 0.0
        self._last_warning = 0.0
        self._lock = threading.Lock()

    @property
    def model_version(self) -> str:
        return self.recommender.model_version

    def read_rows(self, user_ids: Sequence[int]) -> list[UserRow] | None:
        """The users' rows in one store read, or None when the store is down or the circuit is open."""
        if self.rows is None or (self.unbound and not self._rebound()) or not self.breaker.allow():
            return None
        try:
            rows = self.rows.read(list(user_ids))
        except FeatureStoreError as exc:
            self.breaker.record_failure(str(exc))
            self._warn(f"online store read failed, answering from the fallback: {exc}")
            return None
        self.breaker.record_success()
        self.store_answered = True
        return rows

    def _rebound(self) -> bool:
        """Re-check a bad binding at most every ``REBIND_EVERY_S``; True once the store serves the model."""
        now = time.monotonic()
        if self.rebind is None or now < self._next_rebind:
            return False
        self._next_rebind = now + REBIND_EVERY_S
        try:
            self.unbound = self.rebind()
        except Exception as exc:  # the check itself failing keeps the service degraded, never down
            self.unbound = [f"binding check failed: {exc}"]
        if self.unbound:
            self._warn("still serving the fallback: " + " ".join(self.unbound))
            return False
        log.info("the online store now serves %s: answering from the model", self.feature_service)
        return True

    def _warn(self, message: str) -> None:
        now = time.monotonic()
        with self._lock:
            if now - self._last_warning < WARN_EVERY_S:
                return
            self._last_warning = now
        log.warning(message)

    def recommend_batch(self, requests: Sequence[RecommendRequest]) -> list[Recommendation]:
        """Answer checked requests with one store read for all of them."""
        rows = self.read_rows([r.user_id for r in requests])
        answers = []
        for i, request in enumerate(requests):
            if rows is None:
                answers.append(
                    self.recommender.popular(
                        request.user_id, request.k, REASON_STORE_UNAVAILABLE, request.exclude_item_ids, degraded=True
                    )
                )
                continue
            row = rows[i]
            answers.append(
                self.recommender.recommend(
                    request.user_id,
                    request.k,
                    row.features,
                    row.recent_items,
                    exclude_seen=request.exclude_seen,
                    exclude_item_ids=request.exclude_item_ids,
                )
            )
        return answers

    def recommend(
        self, user_id: int, k: int = 10, exclude_seen: bool = True, exclude_item_ids: Sequence[int] = ()
    ) -> Recommendation:
        """One user's top ``k`` (see ``recommend_batch``)."""
        request = RecommendRequest(user_id, k, exclude_seen, tuple(exclude_item_ids)).check()
        return self.recommend_batch([request])[0]

    def similar_items(self, item_id: int, k: int = 10) -> tuple[list[int], list[float]]:
        """Items closest to ``item_id`` by their embeddings (no store read)."""
        return self.recommender.similar_items(item_id, k)

    def score(self, user_id: int, item_ids: Sequence[int]) -> Scored:
        """The model's scores of the caller's ``item_ids`` for ``user_id``, in the given order."""
        user_id = validate_id(user_id)
        ids = validate_ids(item_ids, "item_id", MAX_SCORED)
        self.recommender.catalog_columns(ids)  # unknown items are a client error, store or not
        rows = self.read_rows([user_id])
        if rows is None:
            return Scored(user_id, ids, None, self.model_version, True, REASON_STORE_UNAVAILABLE)
        row = rows[0]
        scores = self.recommender.score(user_id, ids, row.features, row.recent_items)
        reason = None if scores is not None else (REASON_NO_FEATURES if row.features is None else "unknown user")
        return Scored(user_id, ids, scores, self.model_version, False, reason)

    def ready(self) -> bool:
        """True once the model is loaded and the store has answered since start (probed now if it has not yet).

        It stays true when the store goes down later: the service then answers from the fallback
        (``degraded: true``), which beats a load balancer taking every replica out at once. Started with
        ``degraded_ok`` on a bad binding, the operator chose fallback answers: ready once the model is loaded.
        """
        if self.unbound or self.rows is None:  # only when started with degraded_ok
            return True
        if not self.store_answered:
            self.read_rows([0])
        return self.store_answered


T = TypeVar("T")
R = TypeVar("R")


class Batcher(Generic[T, R]):
    """Runs ``fn`` on batches of concurrent submissions in one worker thread.

    A submission waits for the batch in flight (if any) to finish; everything that queued meanwhile, up to
    ``max_batch``, then runs as the next batch. At low load a batch holds one request (no added wait); under
    load the store read and the thread hop are shared by the batch. The event loop stays free to accept and
    parse requests while a batch computes.
    """

    def __init__(self, fn: Callable[[list[T]], list[R]], max_batch: int = 64) -> None:
        self.fn = fn
        self.max_batch = max_batch
        self._pending: list[tuple[T, asyncio.Future[R]]] = []
        self._running = False
        self._task: asyncio.Task[None] | None = None
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="recsys-batch")

    async def submit(self, item: T) -> R:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[R] = loop.create_future()
        self._pending.append((item, future))
        if not self._running:
            self._running = True
            self._task = loop.create_task(self._drain())
        return await future

    async def _drain(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            while self._pending:
                batch, self._pending = self._pending[: self.max_batch], self._pending[self.max_batch :]
                try:
                    results = await loop.run_in_executor(self._executor, self.fn, [item for item, _ in batch])
                except Exception as exc:  # a systemic failure: every caller of the batch gets it
                    for _, future in batch:
                        if not future.done():
                            future.set_exception(exc)
                    continue
                for (_, future), result in zip(batch, results, strict=True):
                    if not future.done():
                        future.set_result(result)
        finally:
            self._running = False

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)


def recommendation_dict(answer: Recommendation, feature_service: str) -> dict[str, Any]:
    """The JSON body of one recommendation (the service's response schema)."""
    return {
        "user_id": answer.user_id,
        "items": answer.item_ids,
        "scores": answer.scores,
        "fallback": answer.fallback,
        "fallback_reason": answer.fallback_reason,
        "degraded": answer.degraded,
        "model_version": answer.model_version,
        "feature_service": feature_service,
    }
