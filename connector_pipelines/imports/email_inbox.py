"""An SMTP receiver for push-style imports: partners email files to a connector's address.

Each connector with an `email:` source is an `InboxRoute`: its address, the folder its files land in, the
senders it takes mail from and a matcher for attachment names. The receiver (aiosmtpd, on its own thread):
- refuses an unknown recipient (`550 5.1.1 no such mailbox`) and a sender the route does not allow
  (`550 5.7.1 sender not allowed`) at RCPT time, when both are known, so such a message is never accepted;
- refuses a message over `max_message_bytes` with `552 5.3.4`: the limit is advertised in EHLO (`SIZE`), a client
  that announces a bigger size is refused at MAIL, and one that does not is refused at the end of DATA, having
  been read no further than the limit (aiosmtpd drops what comes after it);
- takes at most `max_sessions` connections at once (the next is greeted with `421 4.7.0` and closed), at most
  `max_recipients` RCPT commands a message (`452 4.5.3` after that) and ends a session whose command (a whole
  DATA transfer included) takes longer than `timeout_seconds`;
- keeps each inbox folder (everything under it: files waiting, archive and quarantine) under `inbox_quota_bytes`:
  when the folder is full a recipient is refused at RCPT, and a message whose files would not fit is refused at
  DATA, both with `452 4.2.2` (the sender's server retries later) and a warning in the log; nothing of such a
  message is written;
- saves each attachment whose name is safe and matches the route's pattern into the route's folder, atomically:
  written and fsynced under `<folder>/.incoming/`, then hard-linked to its final name, which never replaces a
  file; when the name is taken, `orders (2).csv`, `orders (3).csv`, ... (the suffix goes before the extension,
  `.csv.gz` counting as one, so patterns such as `orders_*.csv` still match);
- answers `250` once at least one file is kept, and `554 5.6.0` when nothing was (the partner's mail server
  then bounces the message to the sender, who learns that the file was not taken).

The file sensor then picks files up by name, size, mtime and checksum; duplicates (a file sent twice) are
recognised there by checksum, not here. The folder needs hard links (any local or NFS file system).

Security: the allow-list checks the envelope sender (MAIL FROM), which a sender can forge; SPF/DKIM/DMARC
checks are out of scope here and belong in front of this receiver (a relay that verifies them), together with
STARTTLS (`tls_cert`/`tls_key`) when mail crosses the internet. Attachment names are never used as paths:
a name with a path separator, a leading dot (so also `..`), control or bidirectional-override characters,
surrounding spaces or more than 255 bytes is skipped.

`events` keeps the last 10,000 things that happened (also logged on this module's logger).

Memory: a message is held in memory while it is received and parsed (aiosmtpd buffers DATA), so the worst case
is about `max_sessions` x `max_message_bytes`, plus four times that for the `STORE_CONCURRENCY` being parsed.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import email
import email.policy
import hashlib
import logging
import os
import socket
import ssl
import stat
import threading
import time
import unicodedata
import uuid
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from email.message import EmailMessage
from pathlib import Path
from typing import Any, Literal

from aiosmtpd.smtp import SMTP

from connector_pipelines.transports.folder import MAX_COPIES, numbered_names

log = logging.getLogger(__name__)

DEFAULT_MAX_MESSAGE_BYTES = 50 * 1024 * 1024
DEFAULT_MAX_SESSIONS = 10
DEFAULT_MAX_RECIPIENTS = 10
DEFAULT_INBOX_QUOTA_BYTES = 10 * 1024**3
DEFAULT_TIMEOUT_SECONDS = 300
# How long a measured inbox size is trusted (plus what was saved since): a folder of many archived files is not
# walked again for every recipient.
QUOTA_RESCAN_SECONDS = 2.0
EVENTS_KEPT = 10_000
INCOMING_FOLDER = ".incoming"
# Messages are parsed and written on worker threads; two at a time bounds memory (each up to ~4x its size).
STORE_CONCURRENCY = 2
_MAX_NAME_BYTES = 255

EventKind = Literal[
    "saved",
    "skipped",
    "unknown_recipient",
    "sender_refused",
    "nothing_kept",
    "store_failed",
    "too_large",
    "too_many_recipients",
    "over_quota",
    "too_many_sessions",
]


@dataclass(frozen=True)
class InboxRoute:
    """One connector's address: where its attachments land, who may send, which attachment names to keep.

    `allowed_senders` holds exact addresses or `@domain.example` (that domain only, not its subdomains).
    """

    address: str
    folder: Path
    allowed_senders: tuple[str, ...]
    pattern: Callable[[str], bool]

    def __post_init__(self) -> None:
        address = self.address.strip().lower()
        if address.count("@") != 1 or address.startswith("@") or address.endswith("@"):
            raise ValueError(f"{self.address!r} is not an email address")
        senders = tuple(sender.strip().lower() for sender in self.allowed_senders)
        if not senders:
            raise ValueError(f"{address}: allowed_senders is empty, so no mail would ever be accepted")
        for sender in senders:
            if "@" not in sender or sender.endswith("@") or sender.count("@") != 1:
                raise ValueError(f"{address}: {sender!r} is neither an address nor @domain.example")
        object.__setattr__(self, "address", address)
        object.__setattr__(self, "allowed_senders", senders)
        object.__setattr__(self, "folder", Path(self.folder))

    def allows(self, sender: str) -> bool:
        """Whether the envelope sender is on the allow-list (the null sender `<>` never is)."""
        sender = sender.strip().lower()
        if "@" not in sender:
            return False
        domain = "@" + sender.rpartition("@")[2]
        return any(sender == entry or (entry.startswith("@") and domain == entry) for entry in self.allowed_senders)


@dataclass(frozen=True)
class InboxEvent:
    """Something the receiver did: a file saved (`path`, `sha256`, `size`), an attachment skipped or a refusal."""

    kind: EventKind
    sender: str
    recipient: str = ""
    attachment: str | None = None  # the attachment's name as sent
    path: Path | None = None
    sha256: str | None = None
    size: int | None = None
    detail: str = ""
    at: dt.datetime = field(default_factory=lambda: dt.datetime.now(dt.UTC))


class EmailReceiver:
    """An SMTP server on `host:port` (0: any free port; `port` is the real one once started) for `routes`."""

    def __init__(
        self,
        routes: Sequence[InboxRoute],
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
        max_sessions: int = DEFAULT_MAX_SESSIONS,
        max_recipients: int = DEFAULT_MAX_RECIPIENTS,
        inbox_quota_bytes: int = DEFAULT_INBOX_QUOTA_BYTES,
        timeout_seconds: float = DEFAULT_TIMEOUT_SECONDS,
        tls_cert: Path | str | None = None,
        tls_key: Path | str | None = None,
        require_tls: bool = False,
        server_name: str | None = None,
    ):
        self.routes: dict[str, InboxRoute] = {}
        for route in routes:
            if route.address in self.routes:
                raise ValueError(f"two routes for {route.address}")
            self.routes[route.address] = route
        if (tls_cert is None) != (tls_key is None):
            raise ValueError("STARTTLS needs both tls_cert and tls_key")
        if require_tls and tls_cert is None:
            raise ValueError("require_tls needs tls_cert and tls_key")
        for setting, value in (
            ("max_message_bytes", max_message_bytes),
            ("max_sessions", max_sessions),
            ("max_recipients", max_recipients),
            ("inbox_quota_bytes", inbox_quota_bytes),
            ("timeout_seconds", timeout_seconds),
        ):
            if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
                raise ValueError(f"{setting} must be a positive number, not {value!r}")
        self.host = host
        self.port = port
        self.max_message_bytes = int(max_message_bytes)
        self.max_sessions = int(max_sessions)
        self.max_recipients = int(max_recipients)
        self.inbox_quota_bytes = int(inbox_quota_bytes)
        self.timeout_seconds = float(timeout_seconds)
        self.tls_cert = tls_cert
        self.tls_key = tls_key
        self.require_tls = require_tls
        self.server_name = server_name
        self._events: deque[InboxEvent] = deque(maxlen=EVENTS_KEPT)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    @property
    def events(self) -> list[InboxEvent]:
        """The most recent events, oldest first (a snapshot)."""
        return list(self._events)

    def start(self) -> EmailReceiver:
        if self._thread is not None:
            raise RuntimeError("the receiver is already running")
        for route in self.routes.values():
            (route.folder / INCOMING_FOLDER).mkdir(parents=True, exist_ok=True)
        tls_context = self._tls_context()
        # aiosmtpd would look the name up for every connection; a slow resolver would stall each greeting.
        hostname = self.server_name or socket.getfqdn()
        handler = _InboxHandler(
            self.routes, self._record, self.max_recipients, InboxUsage(self.inbox_quota_bytes, QUOTA_RESCAN_SECONDS)
        )
        gate = _SessionGate(self.max_sessions)

        def make_protocol() -> SMTP:
            return _LimitedSMTP(
                handler,
                gate=gate,
                record=self._record,
                data_size_limit=self.max_message_bytes,
                enable_SMTPUTF8=True,
                hostname=hostname,
                ident="connector-pipelines inbox",
                tls_context=tls_context,
                require_starttls=self.require_tls,
                timeout=self.timeout_seconds,
            )

        loop = asyncio.new_event_loop()
        started = threading.Event()
        failure: list[BaseException] = []

        def run() -> None:
            asyncio.set_event_loop(loop)
            try:
                server = loop.run_until_complete(loop.create_server(make_protocol, host=self.host, port=self.port))
            except BaseException as exc:  # noqa: BLE001 - handed to start() below
                failure.append(exc)
                loop.close()
                started.set()
                return
            # Bound here rather than through aiosmtpd's Controller, which cannot listen on port 0.
            self.port = server.sockets[0].getsockname()[1]
            started.set()
            try:
                loop.run_forever()
            finally:
                loop.run_until_complete(_shut_down(loop, server))
                loop.close()

        thread = threading.Thread(target=run, name=f"email-receiver-{self.host}", daemon=True)
        thread.start()
        started.wait()
        if failure:
            thread.join()
            raise failure[0]
        self._loop, self._thread = loop, thread
        log.info(
            "email receiver listening on %s:%s for %s (limits: %s)",
            self.host,
            self.port,
            ", ".join(self.routes),
            self.describe_limits(),
        )
        return self

    def describe_limits(self) -> str:
        """The limits in force, as one line for people."""
        sessions = f"{self.max_sessions} session{'s' if self.max_sessions != 1 else ''}"
        recipients = f"{self.max_recipients} recipient{'s' if self.max_recipients != 1 else ''}"
        return (
            f"{sessions} at once, {format_size(self.max_message_bytes)} a message, {recipients} a message, "
            f"{format_size(self.inbox_quota_bytes)} an inbox, {self.timeout_seconds:g} s a command"
        )

    def stop(self) -> None:
        """Stop listening, end open sessions and wait for files being written."""
        if self._thread is None or self._loop is None:
            return
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join()
        self._loop, self._thread = None, None

    def __enter__(self) -> EmailReceiver:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def _tls_context(self) -> ssl.SSLContext | None:
        if self.tls_cert is None:
            return None
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(str(self.tls_cert), str(self.tls_key))
        return context

    def _record(self, event: InboxEvent) -> None:
        self._events.append(event)
        level = logging.INFO if event.kind == "saved" else logging.WARNING
        log.log(
            level,
            "inbox %s: from %s to %s%s%s",
            event.kind,
            event.sender or "<>",
            event.recipient,
            f" attachment {event.attachment!r}" if event.attachment is not None else "",
            f" -> {event.path}" if event.path else f" ({event.detail})" if event.detail else "",
        )


async def _shut_down(loop: asyncio.AbstractEventLoop, server: asyncio.Server) -> None:
    server.close()
    sessions = [task for task in asyncio.all_tasks(loop) if task is not asyncio.current_task()]
    for task in sessions:
        task.cancel()  # aiosmtpd closes the connection of a cancelled session
    await asyncio.gather(*sessions, return_exceptions=True)
    await server.wait_closed()
    await loop.shutdown_default_executor()  # lets a file being saved finish


class _SessionGate:
    """How many sessions are open (touched on the event loop's thread only, so a plain counter)."""

    def __init__(self, limit: int):
        self.limit = limit
        self.open = 0


class _LimitedSMTP(SMTP):
    """aiosmtpd's SMTP session, with a cap on sessions open at once and its size refusals given our wording."""

    def __init__(self, handler: Any, *, gate: _SessionGate, record: Callable[[InboxEvent], None], **kwargs: Any):
        super().__init__(handler, **kwargs)
        self._gate = gate
        self._record = record
        self._admitted = False
        self._turned_away = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # Called again, with the TLS transport, after STARTTLS: a session is counted once.
        if not self._admitted:
            if self._gate.open >= self._gate.limit:
                self._turned_away = True
                peer = transport.get_extra_info("peername")
                transport.write(b"421 4.7.0 too many connections at once; try again later\r\n")  # type: ignore[attr-defined]
                transport.close()
                self._record(
                    InboxEvent(
                        "too_many_sessions",
                        "",
                        detail=f"connection from {_peer(peer)} turned away: {self._gate.limit} sessions are open",
                    )
                )
                return
            self._gate.open += 1
            self._admitted = True
        super().connection_made(transport)

    def connection_lost(self, error: Exception | None) -> None:
        if self._turned_away:
            return
        if self._admitted:
            self._gate.open -= 1
            self._admitted = False
        super().connection_lost(error)

    def eof_received(self) -> bool | None:
        if self._turned_away:
            return False
        return super().eof_received()

    def data_received(self, data: bytes) -> None:
        if self._turned_away:
            return  # the connection is closing; nothing it sends is read
        super().data_received(data)

    async def push(self, status: Any) -> None:
        # aiosmtpd's own size refusals ("552 Error: ..." at MAIL for an announced SIZE, and at the end of DATA once
        # the limit was passed): said with the limit, and recorded.
        if isinstance(status, str) and status.startswith("552 Error:"):
            limit = self.data_size_limit or 0
            envelope = self.envelope
            announced = "message size exceeds" in status
            self._record(
                InboxEvent(
                    "too_large",
                    (envelope.mail_from or "") if envelope is not None else "",
                    ", ".join(envelope.rcpt_tos) if envelope is not None else "",
                    detail=(
                        f"the announced size is over {limit:,} bytes"
                        if announced
                        else f"more than {limit:,} bytes sent; the rest was not kept"
                    ),
                )
            )
            status = f"552 5.3.4 message too big: at most {format_size(limit)} ({limit:,} bytes) is accepted"
        await super().push(status)


def _peer(peer: Any) -> str:
    if isinstance(peer, tuple) and len(peer) >= 2:
        return f"{peer[0]}:{peer[1]}"
    return str(peer)


class InboxUsage:
    """How many bytes each inbox folder holds (every regular file under it), measured at most every
    `rescan_seconds` and counting what was saved since; the import moves files out meanwhile, so the folder is
    measured again rather than tracked."""

    def __init__(self, quota_bytes: int, rescan_seconds: float):
        self.quota_bytes = quota_bytes
        self.rescan_seconds = rescan_seconds
        self._measured: dict[Path, tuple[float, int]] = {}
        self._lock = threading.Lock()

    def used(self, folder: Path) -> int:
        with self._lock:
            measured = self._measured.get(folder)
            if measured is None or time.monotonic() - measured[0] > self.rescan_seconds:
                measured = (time.monotonic(), folder_bytes(folder))
                self._measured[folder] = measured
            return measured[1]

    def add(self, folder: Path, size: int) -> None:
        with self._lock:
            at, used = self._measured.get(folder, (time.monotonic(), folder_bytes(folder)))
            self._measured[folder] = (at, used + size)


def folder_bytes(folder: Path) -> int:
    """The size of every regular file under `folder` (symlinks are not followed nor counted)."""
    total = 0
    pending = [folder]
    while pending:
        try:
            with os.scandir(pending.pop()) as entries:
                for entry in entries:
                    try:
                        info = entry.stat(follow_symlinks=False)
                    except FileNotFoundError:
                        continue  # moved away by the import meanwhile
                    if stat.S_ISDIR(info.st_mode):
                        pending.append(Path(entry.path))
                    elif stat.S_ISREG(info.st_mode):
                        total += info.st_size
        except FileNotFoundError:
            continue
    return total


def quota_refusal(used: int, incoming: int, quota: int) -> str | None:
    """The SMTP reply that refuses `incoming` more bytes for an inbox holding `used` of `quota` bytes, or None
    when they fit (`incoming` 0: whether the inbox takes anything at all). A full inbox is temporary (the import
    moves files out, someone prunes the archive), so the sender is told to retry; files bigger than the whole
    quota never fit, and are refused for good."""
    if incoming > quota:
        return f"552 5.3.4 the files are bigger than the inbox's whole quota of {format_size(quota)}"
    if used >= quota or used + incoming > quota:
        return f"452 4.2.2 the inbox is full ({format_size(used)} of {format_size(quota)} used); try again later"
    return None


class _InboxHandler:
    """aiosmtpd's handler hooks: routing, sender and limit checks at RCPT, saving attachments at DATA."""

    def __init__(
        self,
        routes: dict[str, InboxRoute],
        record: Callable[[InboxEvent], None],
        max_recipients: int,
        usage: InboxUsage,
    ):
        self.routes = routes
        self.record = record
        self.max_recipients = max_recipients
        self.usage = usage
        self._store_slots: asyncio.Semaphore | None = None
        # The quota check and the writes it allows happen together, so two messages cannot both fit the last space.
        self._saving = threading.Lock()

    async def handle_RCPT(  # aiosmtpd's hook name
        self, server: Any, session: Any, envelope: Any, address: str, rcpt_options: list[str]
    ) -> str:
        sender = envelope.mail_from or ""
        # Counted on the envelope, refused recipients included: aiosmtpd gives each message a new one.
        envelope.rcpt_attempts = getattr(envelope, "rcpt_attempts", 0) + 1
        if envelope.rcpt_attempts > self.max_recipients:
            self.record(
                InboxEvent("too_many_recipients", sender, address, detail=f"more than {self.max_recipients} recipients")
            )
            return f"452 4.5.3 too many recipients: at most {self.max_recipients} a message"
        route = self.routes.get(address.strip().lower())
        if route is None:
            self.record(InboxEvent("unknown_recipient", sender, address))
            return "550 5.1.1 no such mailbox"
        if not route.allows(sender):
            self.record(InboxEvent("sender_refused", sender, route.address, detail="not on the allow-list"))
            return "550 5.7.1 sender not allowed"
        used = await asyncio.get_running_loop().run_in_executor(None, self.usage.used, route.folder)
        refusal = quota_refusal(used, 0, self.usage.quota_bytes)
        if refusal is not None:
            self.record(InboxEvent("over_quota", sender, route.address, detail=f"{route.folder}: {refusal[4:]}"))
            return refusal
        envelope.rcpt_tos.append(route.address)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # aiosmtpd's hook name
        sender = envelope.mail_from or ""
        routes = [self.routes[address] for address in dict.fromkeys(envelope.rcpt_tos)]
        if self._store_slots is None:
            self._store_slots = asyncio.Semaphore(STORE_CONCURRENCY)
        async with self._store_slots:
            loop = asyncio.get_running_loop()
            try:
                kept, refusal = await loop.run_in_executor(None, self._store, envelope.original_content, sender, routes)
            except OSError as exc:
                # A temporary failure (disk full): the sender's server retries later. Files already saved from
                # this message are saved again then, as "name (2).ext"; the sensor's checksum catches those.
                for route in routes:
                    self.record(InboxEvent("store_failed", sender, route.address, detail=str(exc)))
                return "451 4.3.0 the message could not be stored; try again later"
        if refusal is not None:
            return refusal
        if not kept:
            for route in routes:
                self.record(InboxEvent("nothing_kept", sender, route.address, detail="no attachment was kept"))
            return "554 5.6.0 no attachment with a name this address accepts; nothing was kept"
        return f"250 2.0.0 OK, {kept} file{'s' if kept > 1 else ''} kept"

    def _store(self, content: bytes, sender: str, routes: list[InboxRoute]) -> tuple[int, str | None]:
        """Save the message's acceptable attachments into each route's folder: (how many were saved, None), or
        (0, the refusal) when they would not fit an inbox's quota; then nothing is saved anywhere."""
        message = email.message_from_bytes(content, policy=email.policy.default)
        attachments = list(_attachments(message))
        plans: list[tuple[InboxRoute, list[tuple[str, bytes]]]] = []
        for route in routes:
            keep: list[tuple[str, bytes]] = []
            for name, part in attachments:
                problem = unsafe_name_reason(name)
                if problem is None and not route.pattern(name):
                    problem = "the name does not match the connector's pattern"
                if problem is not None:
                    self.record(InboxEvent("skipped", sender, route.address, attachment=name, detail=problem))
                    continue
                keep.append((name, part.get_payload(decode=True) or b""))
            plans.append((route, keep))
        with self._saving:
            for route, keep in plans:
                incoming = sum(len(data) for _, data in keep)
                used = self.usage.used(route.folder) if keep else 0
                refusal = quota_refusal(used, incoming, self.usage.quota_bytes) if keep else None
                if refusal is not None:
                    self.record(
                        InboxEvent(
                            "over_quota",
                            sender,
                            route.address,
                            detail=f"{route.folder}: {incoming:,} bytes would not fit: {refusal[4:]}",
                        )
                    )
                    return 0, refusal
            kept = 0
            for route, keep in plans:
                for name, data in keep:
                    path = save_atomically(route.folder, name, data)
                    self.usage.add(route.folder, len(data))
                    kept += 1
                    self.record(
                        InboxEvent(
                            "saved",
                            sender,
                            route.address,
                            attachment=name,
                            path=path,
                            sha256=hashlib.sha256(data).hexdigest(),
                            size=len(data),
                        )
                    )
        return kept, None


def _attachments(message: EmailMessage) -> Iterator[tuple[str, EmailMessage]]:
    """Every leaf part with a file name, at any depth (mail clients nest them, and some mark them inline)."""
    for part in message.walk():
        if part.is_multipart():
            continue
        name = part.get_filename()
        if name is not None:
            yield name, part


def unsafe_name_reason(name: str) -> str | None:
    """Why an attachment name cannot be used as a file name as it is, or None when it can."""
    if not name.strip():
        return "the name is empty"
    if "/" in name or "\\" in name:
        return "the name contains a path separator"
    if name.startswith("."):
        return "the name starts with a dot"  # '.', '..' and hidden files alike
    if any(unicodedata.category(char) in ("Cc", "Cf", "Zl", "Zp") for char in name):
        return "the name contains control or formatting characters"
    if name != name.strip():
        return "the name starts or ends with a space"
    if len(name.encode("utf-8", "surrogateescape")) > _MAX_NAME_BYTES:
        return f"the name is longer than {_MAX_NAME_BYTES} bytes"
    return None


def save_atomically(folder: Path, name: str, data: bytes) -> Path:
    """Write `data` as `folder/name`, or `name (2).ext`... when taken; the file appears whole or not at all."""
    incoming = folder / INCOMING_FOLDER
    incoming.mkdir(parents=True, exist_ok=True)
    temporary = incoming / f"{uuid.uuid4().hex}.part"
    try:
        with open(temporary, "xb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        for candidate in numbered_names(name):
            target = folder / candidate
            try:
                # A link is atomic and, unlike rename, never replaces an existing file.
                os.link(temporary, target)
            except FileExistsError:
                continue
            _fsync_folder(folder)  # the 250 reply promises the file is on disk
            return target
        raise FileExistsError(f"{folder}: {MAX_COPIES} files named like {name!r} already exist")
    finally:
        temporary.unlink(missing_ok=True)


def _fsync_folder(folder: Path) -> None:
    descriptor = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


_UNITS = {"": 1, "b": 1, "k": 1000, "kb": 1000, "m": 1000**2, "mb": 1000**2, "g": 1000**3, "gb": 1000**3}
_UNITS |= {"kib": 1024, "mib": 1024**2, "gib": 1024**3, "tib": 1024**4, "t": 1000**4, "tb": 1000**4}


def parse_size(text: str) -> int:
    """'52428800', '50MiB', '50 MB', '10GiB' -> bytes (KB/MB/GB are powers of 1000, KiB/MiB/GiB of 1024)."""
    cleaned = text.strip().lower().replace("_", "").replace(",", "")
    number = cleaned.rstrip("abcdefghijklmnopqrstuvwxyz ").strip()
    unit = cleaned[len(number) :].strip()
    try:
        value = float(number)
    except ValueError:
        value = -1.0
    if unit not in _UNITS or value <= 0:
        raise ValueError(f"{text!r} is not a size; write bytes (52428800) or a number with KB, MB, GB, KiB, MiB or GiB")
    return int(value * _UNITS[unit])


def format_size(size: int) -> str:
    """Bytes for people: 52428800 -> '50 MiB', 1500 -> '1,500 bytes'."""
    for unit, factor in (("GiB", 1024**3), ("MiB", 1024**2), ("KiB", 1024)):
        if size >= factor:
            value = size / factor
            return f"{value:.0f} {unit}" if value == int(value) else f"{value:.1f} {unit}"
    return f"{size:,} bytes"
