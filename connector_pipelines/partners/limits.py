"""The exchange's limits: failed logins (per partner and per source address) and quotas (per partner).

Failed logins: the first `free_failures` within the window cost nothing more than the hash; after that, each
further failure locks the partner name and the address out for `base_seconds * 2**(extra failures)`, at most
`max_seconds`. While locked out, every login of that name or from that address is refused without looking at the
credentials (so a guess made then is never checked, right or wrong). A success clears the partner's count; the
address's count ends with the window. Decisions are pure functions of the counts and a clock.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from connector_pipelines.partners.layout import Usage
from connector_pipelines.spec.partners import PartnerQuota

_MAX_TRACKED = 100_000  # keys remembered at once; the oldest go first (an address scan must not fill memory)


@dataclass(frozen=True)
class ThrottlePolicy:
    free_failures: int = 5
    base_seconds: float = 30.0
    max_seconds: float = 3600.0
    window_seconds: float = 3600.0  # failures older than this are forgotten


def lockout_seconds(failures: int, policy: ThrottlePolicy) -> float:
    """How long the next login waits after `failures` failures in a row."""
    extra = failures - policy.free_failures
    if extra < 0:
        return 0.0
    return min(policy.max_seconds, policy.base_seconds * 2 ** min(extra, 32))


@dataclass
class _Failures:
    count: int
    last: float


class LoginThrottle:
    """Failed logins counted per key (`partner:NAME`, `address:IP`); shared by the SFTP and FTPS servers' threads."""

    def __init__(self, policy: ThrottlePolicy = ThrottlePolicy(), clock: Callable[[], float] = time.monotonic):
        self.policy = policy
        self.clock = clock
        self._failures: dict[str, _Failures] = {}
        self._lock = threading.Lock()

    def locked_for(self, *keys: str) -> float:
        """Seconds until a login for these keys may be tried again (0: now)."""
        now = self.clock()
        with self._lock:
            waits = [self._remaining(key, now) for key in keys]
        return max(waits, default=0.0)

    def _remaining(self, key: str, now: float) -> float:
        found = self._failures.get(key)
        if found is None or now - found.last > self.policy.window_seconds:
            return 0.0
        return max(0.0, found.last + lockout_seconds(found.count, self.policy) - now)

    def failed(self, *keys: str) -> int:
        """Count a failure for each key; returns the highest count among them."""
        now = self.clock()
        highest = 0
        with self._lock:
            for key in keys:
                found = self._failures.pop(key, None)
                count = 1 if found is None or now - found.last > self.policy.window_seconds else found.count + 1
                self._failures[key] = _Failures(count, now)  # re-inserted: the dict stays ordered oldest first
                highest = max(highest, count)
            while len(self._failures) > _MAX_TRACKED:
                self._failures.pop(next(iter(self._failures)))
        return highest

    def succeeded(self, key: str) -> None:
        with self._lock:
            self._failures.pop(key, None)


def partner_key(name: str) -> str:
    return f"partner:{name}"


def address_key(address: str) -> str:
    return f"address:{address}"


def quota_problem(usage: Usage, quota: PartnerQuota) -> str | None:
    """Why `usage` (what the inbox would hold) is past the quota, for the partner; None when within it."""
    if usage.files > quota.max_files:
        return f"quota exceeded: your inbox may hold at most {quota.max_files:,} files"
    if usage.bytes > quota.max_bytes:
        return f"quota exceeded: your inbox may hold at most {quota.max_bytes:,} bytes"
    return None


class UploadsInProgress:
    """The bytes of every upload still open, per partner, so two uploads at once cannot both take the last room."""

    def __init__(self) -> None:
        self._sizes: dict[str, dict[int, int]] = {}
        self._lock = threading.Lock()

    def set(self, partner: str, upload: int, size: int) -> None:
        with self._lock:
            self._sizes.setdefault(partner, {})[upload] = size

    def drop(self, partner: str, upload: int) -> None:
        with self._lock:
            self._sizes.get(partner, {}).pop(upload, None)

    def others(self, partner: str, upload: int) -> Usage:
        """The uploads of `partner` other than `upload`."""
        with self._lock:
            sizes = [size for key, size in self._sizes.get(partner, {}).items() if key != upload]
        return Usage(len(sizes), sum(sizes))
