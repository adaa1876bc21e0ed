"""`redact`, the last line of defence that keeps secrets out of messages: as written, URL-encoded, and short."""

from __future__ import annotations

from urllib.parse import quote, quote_plus, urlencode

from connector_pipelines.errors import redact


def test_a_url_encoded_secret_is_redacted_in_each_encoding() -> None:
    secret = "p@ss/w rd+1"
    message = (
        f"POST https://api.example/login?{urlencode({'password': secret})} failed; "
        f"path /u/{quote(secret)}, segment {quote(secret, safe='')}, form {quote_plus(secret)}"
    )
    assert redact(message, [secret]) == (
        "POST https://api.example/login?password=*** failed; path /u/***, segment ***, form ***"
    )


def test_a_secret_that_contains_another_is_redacted_whole() -> None:
    assert redact("token abcd-efgh-ijkl sent", ["efgh", "abcd-efgh-ijkl"]) == "token *** sent"


def test_a_short_secret_is_redacted_where_it_stands_alone() -> None:
    # Replacing every 'pw' would garble the message (and show where the password's letters are); standing alone,
    # as in user:pw@host or password=pw, it is the secret.
    message = "login as bob:pw@ftp.example failed (password=pw, pw); pwd and upw unchanged"
    assert redact(message, ["pw"]) == "login as bob:***@ftp.example failed (password=***, ***); pwd and upw unchanged"
    # Its encoded form too: '@' encodes as '%40'.
    assert redact("user=%40 sent", ["@"]) == "user=*** sent"
