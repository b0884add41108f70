"""The streak of alike failures: held back while they look alike, released when one differs."""

from __future__ import annotations

from batcher.errors import BadRequest
from batcher.transports.recording import FailureStreak


def _failure(message: str = "model 'gpt-5o' does not exist", status: int = 404) -> BadRequest:
    return BadRequest(message, type="invalid_request_error", status=status, param="model")


def test_alike_failures_are_held_until_the_limit_says_the_job_is_wrong():
    streak = FailureStreak(limit=3)

    released = [streak.hold({"id": str(i)}, _failure()) for i in range(3)]

    assert released == [[], [], []]
    assert streak.reached
    assert [r["id"] for r in streak.release()] == ["0", "1", "2"]
    assert not streak.reached and len(streak) == 0


def test_a_failure_of_another_kind_releases_the_held_ones_as_row_failures():
    streak = FailureStreak(limit=3)
    streak.hold({"id": "a"}, _failure())
    streak.hold({"id": "b"}, _failure())

    released = streak.hold({"id": "c"}, _failure("content too long", status=400))

    assert [r["id"] for r in released] == ["a", "b"]
    assert len(streak) == 1 and not streak.reached


def test_the_same_status_with_another_message_is_another_kind():
    streak = FailureStreak(limit=2)
    streak.hold({"id": "a"}, _failure("messages[0] has no content"))

    released = streak.hold({"id": "b"}, _failure("messages[1] has no content"))

    assert [r["id"] for r in released] == ["a"]
    assert not streak.reached


def test_no_limit_never_stops_the_run():
    streak = FailureStreak(limit=0)

    for i in range(50):
        streak.hold({"id": str(i)}, _failure())

    assert not streak.reached and len(streak) == 50
