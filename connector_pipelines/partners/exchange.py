"""Who may log in to the file exchange: the partners of partners.yaml, their credentials in the state database, the
networks they may come from and the failed-login throttle. Shared by the SFTP and the FTPS server.

Log lines name the partner, the address and why a login was refused; never a password, a hash or a key's secret.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from connector_pipelines.partners.layout import PartnerFolders
from connector_pipelines.partners.limits import (
    LoginThrottle,
    UploadsInProgress,
    address_key,
    lockout_seconds,
    partner_key,
)
from connector_pipelines.spec.partners import PartnerSpec
from connector_pipelines.state.partner_credentials import PartnerCredentials, password_matches

log = logging.getLogger("connector_pipelines.partners")


@dataclass
class Exchange:
    storage_root: Path
    partners: Mapping[str, PartnerSpec]
    credentials: PartnerCredentials
    throttle: LoginThrottle = field(default_factory=LoginThrottle)
    uploads: UploadsInProgress = field(default_factory=UploadsInProgress)

    def folders(self, partner: str) -> PartnerFolders:
        return PartnerFolders.of(self.storage_root, partner)

    def may_try(self, method: str, username: str, address: str) -> str | None:
        """Why a login of `username` from `address` by `method` is refused before its credentials are looked at,
        or None when they may be checked."""
        partner = self.partners.get(username)
        keys = [address_key(address)] + ([partner_key(username)] if partner is not None else [])
        wait = self.throttle.locked_for(*keys)
        if wait > 0:
            return f"locked out after repeated failed logins, for {wait:.0f}s more"
        if partner is None:
            return "no such partner"
        if not partner.enabled:
            return "the partner is disabled in partners.yaml"
        if method not in partner.methods:
            return f"{method} is not among the partner's methods ({', '.join(partner.methods)})"
        if not partner.allows_address(address):
            return "the address is not in the partner's allowed_networks"
        return None

    def login(self, method: str, username: str, address: str, *, password: str | None = None, key: str | None = None):
        """Whether the credentials are right: `password`, or the public key line `key`; refusals are logged here,
        a success by `logged_in` once the session is authenticated.
        A wrong password counts as a failure for the partner and the address (a refused key does not: clients
        offer several keys in turn)."""
        refused = self.may_try(method, username, address)
        shown = username[:64].encode("unicode_escape").decode("ascii")
        if refused is None:
            if password is not None:
                ok = self.credentials.check_password(username, password)
            else:
                ok = key is not None and self.credentials.check_key(username, key)
            if ok:
                return True
            if password is None:
                log.info("%s login refused: partner '%s' from %s: public key not registered", method, shown, address)
                return False
            refused = "wrong password, or no password registered"
        else:
            if refused == "no such partner" and password is not None:
                password_matches(password, None)  # as slow as a real check: the refusal says nothing of who exists
            # Also without checking: a guess sent while locked out still counts, so a flood stays locked out.
            if password is None:
                log.warning("%s login refused: partner '%s' from %s: %s", method, shown, address, refused)
                return False
        keys = [address_key(address)] + ([partner_key(username)] if username in self.partners else [])
        failures = self.throttle.failed(*keys)
        wait = lockout_seconds(failures, self.throttle.policy)
        locked = f"; locked out for {wait:.0f}s" if wait else ""
        log.warning(
            "%s login refused: partner '%s' from %s: %s (%d failed in a row%s)",
            method,
            shown,
            address,
            refused,
            failures,
            locked,
        )
        return False

    def logged_in(self, method: str, username: str, address: str, how: str) -> None:
        """A session authenticated: the partner's failure count starts again, and its last login is recorded."""
        self.throttle.succeeded(partner_key(username))
        self.credentials.record_login(username)
        log.info("%s login: partner '%s' from %s (%s)", method, username, address, how)
