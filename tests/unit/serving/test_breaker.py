"""CircuitBreaker on a fake clock: open after N failures, fail fast, one half-open probe, close or re-open."""

from __future__ import annotations

import threading

import pytest

from recsys.serving.breaker import CircuitBreaker


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def _opened(clock: FakeClock, failures: int = 3, reset_s: float = 2.0) -> CircuitBreaker:
    breaker = CircuitBreaker(failures, reset_s, clock=clock)
    for _ in range(failures):
        assert breaker.allow()
        breaker.record_failure("refused")
    assert breaker.state == "open"
    return breaker


def test_opens_after_n_consecutive_failures(clock: FakeClock) -> None:
    breaker = CircuitBreaker(3, 2.0, clock=clock)
    assert breaker.state == "closed" and breaker.allow()
    breaker.record_failure("one")
    breaker.record_failure("two")
    breaker.record_success()  # a success resets the count: failures must be consecutive
    breaker.record_failure("three")
    breaker.record_failure("four")
    assert breaker.state == "closed" and breaker.allow()
    breaker.record_failure(ConnectionError("Redis refused"))
    assert breaker.state == "open"
    assert breaker.last_error == "Redis refused"


def test_rejects_while_open_until_reset(clock: FakeClock) -> None:
    breaker = _opened(clock)
    assert not any(breaker.allow() for _ in range(100))
    clock.now += 1.99
    assert not breaker.allow()
    breaker.record_failure()  # a late failure of a call let through before opening does not extend it
    clock.now += 0.01
    assert breaker.allow()
    assert breaker.state == "half_open"


def test_half_open_probe_success_closes(clock: FakeClock) -> None:
    breaker = _opened(clock)
    clock.now += 2.0
    assert breaker.allow()
    assert not breaker.allow()  # the probe is in flight: everyone else still gets the fallback
    breaker.record_success()
    assert breaker.state == "closed"
    assert all(breaker.allow() for _ in range(10))
    breaker.record_failure()
    breaker.record_failure()
    assert breaker.state == "closed"  # the count started again from zero


def test_half_open_probe_failure_reopens_for_another_reset(clock: FakeClock) -> None:
    breaker = _opened(clock)
    clock.now += 5.0
    assert breaker.allow()
    clock.now += 0.5
    breaker.record_failure("still down")
    assert breaker.state == "open" and breaker.last_error == "still down"
    clock.now += 1.99
    assert not breaker.allow()
    clock.now += 0.01
    assert breaker.allow()
    assert not breaker.allow()


def test_a_lost_probe_is_replaced_after_another_reset(clock: FakeClock) -> None:
    breaker = _opened(clock)
    clock.now += 2.0
    assert breaker.allow()  # this probe never reports back
    clock.now += 1.0
    assert not breaker.allow()
    clock.now += 1.0
    assert breaker.allow()
    assert breaker.state == "half_open"


def test_only_one_probe_under_threads(clock: FakeClock) -> None:
    breaker = _opened(clock)
    clock.now += 2.0
    start = threading.Barrier(32)
    allowed: list[bool] = []
    lock = threading.Lock()

    def call() -> None:
        start.wait()
        for _ in range(200):
            ok = breaker.allow()
            with lock:
                allowed.append(ok)

    threads = [threading.Thread(target=call) for _ in range(32)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(allowed) == 32 * 200
    assert allowed.count(True) == 1


def test_arguments_are_checked() -> None:
    with pytest.raises(ValueError, match="failures"):
        CircuitBreaker(0, 1.0)
    with pytest.raises(ValueError, match="reset_s"):
        CircuitBreaker(1, 0.0)
