"""What a finished batch's files say about each row: answered, failed for good, or to send again."""

from __future__ import annotations

import json

from batcher.transports.batchapi.collect import read_fates


def line(custom_id: str, status: int | None = None, body=None, error=None) -> bytes:
    response = {"status_code": status, "request_id": f"req_{custom_id}", "body": body} if status else None
    return json.dumps(
        {"id": f"batch_req_{custom_id}", "custom_id": custom_id, "response": response, "error": error}
    ).encode()


COMPLETION = {"object": "chat.completion", "choices": [{"index": 0, "message": {"content": "positive"}}]}


def test_each_row_is_answered_failed_or_sent_again_whatever_the_order_of_the_lines():
    output = b"\n".join(
        [
            line("c", 400, {"error": {"message": "messages too long", "type": "invalid_request_error"}}),
            line("a", 200, COMPLETION),
            line("d", 500, {"error": {"message": "boom", "type": "server_error"}}),
        ]
    )
    errors = line("e", error={"code": "batch_expired", "message": "This request could not be executed"})

    fates = read_fates(output, errors, ["a", "b", "c", "d", "e"])

    assert list(fates.answered) == ["a"] and fates.answered["a"].body == COMPLETION
    assert fates.answered["a"].request_id == "req_a"
    assert {k: (f.status, f.type, f.message) for k, f in fates.failed.items()} == {
        "c": (400, "invalid_request_error", "messages too long")
    }
    assert {k: f.type for k, f in fates.again.items()} == {
        "b": "batch_missing",  # no line at all
        "d": "server_error",
        "e": "batch_expired",
    }


def test_cancelled_rows_go_again_and_other_provider_errors_are_the_rows_own():
    errors = b"\n".join(
        [
            line("a", error={"code": "batch_cancelled", "message": "cancelled"}),
            line("b", error={"code": "invalid_json_line", "message": "line 2 is not valid JSON"}),
        ]
    )

    fates = read_fates(b"", errors, ["a", "b"])

    assert list(fates.again) == ["a"]
    assert fates.failed["b"].type == "invalid_json_line" and not fates.failed["b"].retryable


def test_lines_of_other_rows_repeated_or_garbled_change_nothing():
    output = b"\n".join(
        [line("a", 200, COMPLETION), line("a", 500, {}), line("zz", 200, COMPLETION), b"{not json", b""]
    )

    fates = read_fates(output, b"", ["a"])

    assert list(fates.answered) == ["a"] and not fates.failed and not fates.again
