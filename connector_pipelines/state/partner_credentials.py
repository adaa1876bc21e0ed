"""The credentials of the partners on our file exchange, in the state database (`cp_partner_credentials`).

A password is generated here (`secrets.token_urlsafe`), shown once by the CLI, and only its scrypt hash is kept:
a per-partner random salt, n=2**15, r=8, p=1 (OWASP's minimum for scrypt: about 50 ms and 32 MiB per guess), in
a self-describing string `scrypt$n$r$p$salt$hash` so the parameters can be raised later without breaking old
hashes. SSH public keys are public: kept as their OpenSSH lines. Nothing here ever logs a password or a hash.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import secrets
from dataclasses import dataclass

import sqlalchemy as sa

from connector_pipelines.state.database import state_engine
from connector_pipelines.state.ledger import utc_now
from connector_pipelines.state.locks import schema_lock

PASSWORD_BYTES = 24  # 192 random bits, 32 URL-safe characters
SCRYPT_N, SCRYPT_R, SCRYPT_P = 2**15, 8, 1
_SCRYPT_MAXMEM = 64 * 1024 * 1024  # the default (32 MiB) is just below what n=2**15, r=8 needs
_SALT_BYTES = 16

metadata = sa.MetaData()
credentials_table = sa.Table(
    "cp_partner_credentials",
    metadata,
    sa.Column("partner", sa.String(64), primary_key=True),
    sa.Column("password_hash", sa.Text),  # None: no password login (SSH key only)
    sa.Column("ssh_keys", sa.Text, nullable=False, default=""),  # OpenSSH public key lines, one a line
    sa.Column("enabled", sa.Boolean, nullable=False, default=True),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("rotated_at", sa.DateTime(timezone=True)),
    sa.Column("last_login_at", sa.DateTime(timezone=True)),
)


class UnknownPartner(KeyError):
    """No credentials are registered for that partner."""


def hash_password(password: str, *, n: int = SCRYPT_N, r: int = SCRYPT_R, p: int = SCRYPT_P) -> str:
    """`scrypt$n$r$p$salt$hash` of `password` with a new random salt."""
    salt = secrets.token_bytes(_SALT_BYTES)
    digest = hashlib.scrypt(password.encode("utf-8"), salt=salt, n=n, r=r, p=p, maxmem=_SCRYPT_MAXMEM, dklen=32)
    return "$".join(("scrypt", str(n), str(r), str(p), _b64(salt), _b64(digest)))


def password_matches(password: str, stored: str | None) -> bool:
    """Whether `password` is the one `stored` was made from; a constant-time comparison of the digests. With no
    stored hash the work is done all the same, so a refusal takes as long whether the partner exists or not."""
    if stored is None:
        hash_password(password)
        return False
    try:
        scheme, n, r, p, salt, digest = stored.split("$")
        if scheme != "scrypt":
            return False
        expected = base64.b64decode(digest)
        found = hashlib.scrypt(
            password.encode("utf-8"),
            salt=base64.b64decode(salt),
            n=int(n),
            r=int(r),
            p=int(p),
            maxmem=_SCRYPT_MAXMEM,
            dklen=len(expected),
        )
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(found, expected)


def new_password() -> str:
    return secrets.token_urlsafe(PASSWORD_BYTES)


def key_line(text: str) -> str:
    """'ssh-ed25519 AAAA...' (type and key, without the comment) of an OpenSSH public key line; ValueError when the
    text is not one."""
    parts = text.strip().split()
    if len(parts) < 2 or not parts[0].startswith(("ssh-", "ecdsa-", "sk-")):
        raise ValueError("not an OpenSSH public key line such as 'ssh-ed25519 AAAA... comment' (a .pub file)")
    try:
        base64.b64decode(parts[1], validate=True)
    except ValueError:
        raise ValueError("the key part of the public key line is not base64") from None
    return f"{parts[0]} {parts[1]}"


@dataclass(frozen=True)
class PartnerLogin:
    """What is registered for one partner (never the hash itself)."""

    partner: str
    has_password: bool
    ssh_keys: tuple[str, ...]
    enabled: bool
    created_at: dt.datetime
    rotated_at: dt.datetime | None
    last_login_at: dt.datetime | None


class PartnerCredentials:
    """Passwords (as hashes) and SSH keys of partners; SQLite by default, PostgreSQL like the ledger."""

    def __init__(self, url: str):
        self.engine = state_engine(url)
        with schema_lock(self.engine):
            metadata.create_all(self.engine, checkfirst=True)

    def dispose(self) -> None:
        self.engine.dispose()

    def add(self, partner: str, ssh_key: str | None = None) -> str | None:
        """Register a partner: with `ssh_key` (a public key line) that key, else a new password, returned (the only
        time it exists in clear). A partner already registered is refused (use rotate, or add a key to it)."""
        t = credentials_table
        password = None if ssh_key else new_password()
        values = {
            "partner": partner,
            "password_hash": hash_password(password) if password else None,
            "ssh_keys": key_line(ssh_key) if ssh_key else "",
            "enabled": True,
            "created_at": utc_now(),
        }
        with self.engine.begin() as conn:
            if conn.execute(sa.select(t.c.partner).where(t.c.partner == partner)).first() is not None:
                raise ValueError(f"partner '{partner}' already has credentials; use `partners rotate {partner}`")
            conn.execute(t.insert().values(**values))
        return password

    def add_key(self, partner: str, ssh_key: str) -> None:
        """Authorize one more public key for a registered partner."""
        login = self.login(partner)
        keys = tuple(dict.fromkeys((*login.ssh_keys, key_line(ssh_key))))
        self._update(partner, ssh_keys="\n".join(keys))

    def rotate(self, partner: str) -> str:
        """A new password (returned once); the old one stops working at once."""
        password = new_password()
        self._update(partner, password_hash=hash_password(password), rotated_at=utc_now())
        return password

    def disable(self, partner: str) -> None:
        self._update(partner, enabled=False)

    def enable(self, partner: str) -> None:
        self._update(partner, enabled=True)

    def record_login(self, partner: str) -> None:
        self._update(partner, last_login_at=utc_now())

    def _update(self, partner: str, **values) -> None:
        t = credentials_table
        with self.engine.begin() as conn:
            if conn.execute(t.update().where(t.c.partner == partner).values(**values)).rowcount == 0:
                raise UnknownPartner(partner)

    def _row(self, partner: str):
        t = credentials_table
        with self.engine.connect() as conn:
            return conn.execute(sa.select(t).where(t.c.partner == partner)).first()

    def login(self, partner: str) -> PartnerLogin:
        row = self._row(partner)
        if row is None:
            raise UnknownPartner(partner)
        return _login(row)

    def logins(self) -> list[PartnerLogin]:
        t = credentials_table
        with self.engine.connect() as conn:
            return [_login(row) for row in conn.execute(sa.select(t).order_by(t.c.partner))]

    def check_password(self, partner: str, password: str) -> bool:
        """Whether the partner is registered, enabled and `password` is its password (slow on purpose)."""
        row = self._row(partner)
        stored = row._mapping["password_hash"] if row is not None and row._mapping["enabled"] else None
        return password_matches(password, stored)

    def check_key(self, partner: str, public_key_line: str) -> bool:
        """Whether the partner is registered, enabled and the key is one of its keys."""
        row = self._row(partner)
        if row is None or not row._mapping["enabled"]:
            return False
        try:
            wanted = key_line(public_key_line)
        except ValueError:
            return False
        return any(hmac.compare_digest(wanted, key) for key in row._mapping["ssh_keys"].splitlines() if key)


def _login(row) -> PartnerLogin:
    m = row._mapping
    return PartnerLogin(
        partner=m["partner"],
        has_password=m["password_hash"] is not None,
        ssh_keys=tuple(key for key in (m["ssh_keys"] or "").splitlines() if key),
        enabled=bool(m["enabled"]),
        created_at=m["created_at"],
        rotated_at=m["rotated_at"],
        last_login_at=m["last_login_at"],
    )


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")
