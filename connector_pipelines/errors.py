"""Errors a user can cause, each with a message that says what is wrong, where, and how to fix it."""

import re
from urllib.parse import quote, quote_plus


class ConnectorConfigError(Exception):
    """A spec or connection file is invalid. `problems` holds one line per problem found."""

    def __init__(self, problems: list[str]):
        self.problems = list(problems)
        super().__init__("\n".join(self.problems))


class ExtractError(Exception):
    """An extract run failed: the message names the connector, the system and the cause, never a secret."""


class TransportError(Exception):
    """Talking to an outside system (SFTP, FTP, S3, SMTP, folder, HTTP) failed; the message carries no secret."""


# A secret shorter than this is replaced only where it stands as a whole token (see `redact`).
MIN_SUBSTRING_SECRET = 4


def redact(message: str, secrets) -> str:
    """Replace every known secret value in a message by '***' (a last line of defence, not the first).

    A secret is replaced as written and in its URL-encoded forms (`quote` with and without `/` kept, and
    `quote_plus`): a client library that reports the URL or the form body it sent shows it so. A secret of fewer
    than MIN_SUBSTRING_SECRET characters is replaced only where it stands alone, between characters that are
    not letters or digits: replacing every 'a' of a message for the password 'a' would garble it (and tell
    the password by where the stars are), while `user:a@host` or `password=a` still loses it.
    """
    forms: set[str] = set()
    for secret in secrets:
        if not secret or not isinstance(secret, str):
            continue
        forms.update((secret, quote(secret, safe=""), quote(secret), quote_plus(secret)))
    # Longest first: a secret that contains another (or its encoded form) is replaced whole.
    for form in sorted(forms, key=len, reverse=True):
        if len(form) >= MIN_SUBSTRING_SECRET:
            message = message.replace(form, "***")
        else:
            message = re.sub(rf"(?<![^\W_]){re.escape(form)}(?![^\W_])", "***", message)
    return message
