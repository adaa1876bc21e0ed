"""Errors a user can cause, each with a message that says what is wrong, where, and how to fix it."""


class ConnectorConfigError(Exception):
    """A spec or connection file is invalid. `problems` holds one line per problem found."""

    def __init__(self, problems: list[str]):
        self.problems = list(problems)
        super().__init__("\n".join(self.problems))


class ExtractError(Exception):
    """An extract run failed: the message names the connector, the system and the cause, never a secret."""


class TransportError(Exception):
    """Talking to an outside system (SFTP, FTP, S3, SMTP, folder, HTTP) failed; the message carries no secret."""


def redact(message: str, secrets) -> str:
    """Replace every known secret value in a message by '***' (a last line of defence, not the first)."""
    for secret in secrets:
        if secret and len(secret) >= 4:
            message = message.replace(secret, "***")
    return message
