"""What the HTTP client takes from a target within bounds, and what it sends as built: bounded gzip reading,
JSON nesting measured before parsing, URLs without normalisation, and whether an outcome is in doubt."""

from __future__ import annotations

import asyncio
import gzip
import json
import resource
import zlib

import pytest

from connector_pipelines.transports.bounded_json import MAX_JSON_DEPTH, UnreadableJson, json_depth, parse_json
from connector_pipelines.transports.http import (
    RESPONSE_BODY_LIMIT,
    HttpDeliveryClient,
    HttpRequest,
    _Inflater,
    request_url,
)
from connector_pipelines_tests.servers import LOOPBACK, free_port
from connector_pipelines_tests.servers.http_target import RecordingTarget
from connector_pipelines_tests.transports.test_http import connection, deliver_one, post

# ---- request_url ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("base", "path", "expected"),
    [
        ("http://h:1/api", "/contacts/..", "http://h:1/api/contacts/.."),
        ("http://h:1/api", "/contacts/./x", "http://h:1/api/contacts/./x"),
        ("http://h:1/api", "/contacts/a%2Fb", "http://h:1/api/contacts/a%2Fb"),
        ("http://h:1/api", "contacts", "http://h:1/api/contacts"),
        ("http://h:1/api", "?q=1", "http://h:1/api?q=1"),
        ("http://h:1", "/a b/é", "http://h:1/a%20b/%C3%A9"),
        ("http://h:1", "/100%", "http://h:1/100%25"),
        ("http://h:1/api", "https://other.example/x/../y", "https://other.example/x/../y"),
    ],
)
def test_request_url_sends_the_path_as_built(base: str, path: str, expected: str) -> None:
    assert str(request_url(base, path)) == expected


def test_request_url_keeps_dot_segments_in_the_path_it_sends() -> None:
    assert request_url("http://h:1/api", "/contacts/..").raw_path == "/api/contacts/.."


def test_a_dot_segment_reaches_the_target_as_written(http_target: RecordingTarget) -> None:
    outcome, _ = deliver_one(
        connection(http_target.base_url), HttpRequest("DELETE", "/contacts/..", idempotency_key="k")
    )
    assert outcome.status is not None
    assert [r.path for r in http_target.requests] == ["/contacts/.."]


# ---- json_depth / parse_json ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "depth"),
    [
        ("1", 0),
        ("[]", 1),
        ('{"a": [1, {"b": []}]}', 4),
        ('["[[[[", "}}}"]', 1),  # brackets in strings do not count
        ('["a\\"[[[["]', 1),  # nor after an escaped quote
        ("[[[[", 4),  # left open: a parser recurses into them before finding the end
        ('["unterminated [[[', 1),
    ],
)
def test_json_depth(text: str, depth: int) -> None:
    assert json_depth(text) == depth


def test_parse_json_refuses_what_nests_too_deep() -> None:
    assert parse_json("[" * MAX_JSON_DEPTH + "]" * MAX_JSON_DEPTH) is not None
    with pytest.raises(UnreadableJson, match=r"nests 100,000 levels deep, more than the 256 parsed"):
        parse_json("[" * 100_000 + "]" * 100_000)
    with pytest.raises(UnreadableJson):
        parse_json("[" * 65_536)  # an answer cut at the body limit: still refused before any recursion
    with pytest.raises(ValueError) as plain:
        parse_json("not json")
    assert not isinstance(plain.value, UnreadableJson)


def test_parse_json_parses_ordinary_answers_with_many_brackets() -> None:
    text = json.dumps({"records": [{"id": i, "tags": []} for i in range(500)]})
    assert parse_json(text)["records"][499]["id"] == 499


# ---- bounded gzip reading ---------------------------------------------------------------------------------------


def _gzip_bomb(decompressed: int) -> bytes:
    """`decompressed` zero bytes, gzipped a megabyte at a time (the test never holds them)."""
    out = zlib.compressobj(9, zlib.DEFLATED, zlib.MAX_WBITS | 16)
    chunk = bytes(1 << 20)
    parts = [out.compress(chunk) for _ in range(decompressed >> 20)]
    return b"".join(parts) + out.flush()


def test_the_inflater_never_returns_more_than_asked() -> None:
    bomb = _gzip_bomb(64 << 20)
    inflater = _Inflater("gzip")
    piece = inflater.feed(bomb[:16384], 1000)
    assert len(piece) == 1000


def test_the_inflater_reads_every_member_of_a_multi_member_gzip() -> None:
    data = gzip.compress(b"first ") + gzip.compress(b"second")
    assert _Inflater("gzip").feed(data, 1 << 20) == b"first second"


def test_a_raw_deflate_body_is_read() -> None:
    raw = zlib.compressobj(6, zlib.DEFLATED, -zlib.MAX_WBITS)
    data = raw.compress(b'{"id": 7}') + raw.flush()
    assert _Inflater("deflate").feed(data, 1 << 20) == b'{"id": 7}'


def test_a_gzip_answer_is_decoded(http_target: RecordingTarget) -> None:
    body = gzip.compress(b'{"id": "c1", "ok": true}')
    http_target.respond_with(201, body, headers={"Content-Encoding": "gzip", "Content-Type": "application/json"})
    outcome, _ = deliver_one(connection(http_target.base_url))
    assert (outcome.status, outcome.error, outcome.body) == (201, None, '{"id": "c1", "ok": true}')
    assert http_target.requests[0].headers["accept-encoding"] == "gzip, deflate"


def test_a_gzip_bomb_is_refused_within_bounded_memory(http_target: RecordingTarget) -> None:
    bomb = _gzip_bomb(1 << 30)  # 1 GiB of zeros in about a megabyte
    http_target.respond_with(200, bomb, headers={"Content-Encoding": "gzip"}, times=1, apply=True)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux: the high-water mark
    outcome, _ = deliver_one(connection(http_target.base_url))
    grown_mib = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    assert grown_mib < 200, f"reading the answer grew the process by {grown_mib:.0f} MiB"
    assert outcome.status == 200 and outcome.attempts == 1
    assert outcome.error.startswith("the target's gzip answer is larger than 64 KiB once decompressed")
    assert len(outcome.body) == RESPONSE_BODY_LIMIT
    # A 2xx status says the target applied it; its answer cannot be judged: the outcome is in doubt.
    assert outcome.in_doubt


def test_an_encoding_the_client_did_not_ask_for_is_refused(http_target: RecordingTarget) -> None:
    http_target.respond_with(500, b"\x00\x01", headers={"Content-Encoding": "br"}, times=1)
    outcome, _ = deliver_one(connection(http_target.base_url))
    assert outcome.error.startswith("the target answered in Content-Encoding 'br', which the client does not decode")
    assert outcome.attempts == 1 and not outcome.in_doubt


# ---- in doubt -----------------------------------------------------------------------------------------------------


def test_a_timed_out_last_try_leaves_the_outcome_in_doubt(http_target: RecordingTarget) -> None:
    http_target.delay_next(3, seconds=0.6)
    outcome, _ = deliver_one(connection(http_target.base_url, timeout_seconds=0.2))
    assert outcome.status is None and outcome.attempts == 3 and outcome.in_doubt
    assert http_target.wait_idle(5) and http_target.applied == {"key-1": 1}


def test_an_answer_after_a_timeout_settles_the_doubt(http_target: RecordingTarget) -> None:
    http_target.delay_next(1, seconds=0.6)
    outcome, _ = deliver_one(connection(http_target.base_url, timeout_seconds=0.2))
    assert (outcome.status, outcome.attempts, outcome.in_doubt) == (201, 2, False)


def test_a_request_that_may_not_be_repeated_is_not_retried_after_a_drop(http_target: RecordingTarget) -> None:
    http_target.drop_next(1)
    conn = connection(http_target.base_url)
    outcome, _ = deliver_one(conn, HttpRequest("POST", "/contacts", b'{"id": "c1"}', retry_in_doubt=False))
    assert outcome.in_doubt and outcome.attempts == 1
    assert outcome.error.endswith("not retried: the target may have applied it, and a repeat could apply it twice")
    # Refused connections never reached the target: retried, and not in doubt.
    refused = connection(f"http://{LOOPBACK}:{free_port()}")
    outcome, _ = deliver_one(refused, HttpRequest("POST", "/contacts", b"{}", retry_in_doubt=False))
    assert outcome.attempts == 3 and not outcome.in_doubt


@pytest.mark.parametrize(("status", "in_doubt"), [(500, False), (502, True), (503, False), (504, True)])
def test_gateway_failures_are_in_doubt(http_target: RecordingTarget, status: int, in_doubt: bool) -> None:
    http_target.fail_next(5, status)
    outcome, _ = deliver_one(connection(http_target.base_url), post())
    assert outcome.status == status and outcome.in_doubt is in_doubt


def test_the_client_is_still_usable_after_a_refused_answer(http_target: RecordingTarget) -> None:
    http_target.respond_with(200, _gzip_bomb(8 << 20), headers={"Content-Encoding": "gzip"}, times=1)

    async def two() -> list:
        async with HttpDeliveryClient(connection(http_target.base_url)) as client:
            return [await client.send(post(1)), await client.send(post(2))]

    first, second = asyncio.run(two())
    assert first.error is not None and (second.status, second.error) == (201, None)
