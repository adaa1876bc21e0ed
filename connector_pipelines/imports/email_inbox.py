"""An SMTP receiver for push-style imports: partners email files to a connector's address.

Each connector with an `email:` source is an `InboxRoute`: its address, the folder its files land in, the
senders it takes mail from and a matcher for attachment names. The receiver (aiosmtpd, on its own thread):
- refuses an unknown recipient (`550 5.1.1 no such mailbox`) and a sender the route does not allow
  (`550 5.7.1 sender not allowed`) at RCPT time, when both are known, so such a message is never accepted;
- refuses a message over `max_message_bytes` (aiosmtpd: `552`, at MAIL when the client announces SIZE);
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
"""

from __future__ import annotations

import asyncio
import datetime as dt
import email
import email.policy
import hashlib
import itertools
import logging
import os
import socket
import ssl
import threading
import unicodedata
import uuid
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from email.message import EmailMessage
from pathlib import Path
from typing import Any, Literal

from aiosmtpd.smtp import SMTP

log = logging.getLogger(__name__)

DEFAULT_MAX_MESSAGE_BYTES = 50 * 1024 * 1024
EVENTS_KEPT = 10_000
INCOMING_FOLDER = ".incoming"
# Messages are parsed and written on worker threads; two at a time bounds memory (each up to ~4x its size).
STORE_CONCURRENCY = 2
_MAX_NAME_BYTES = 255
_MAX_COPIES = 10_000

EventKind = Literal["saved", "skipped", "unknown_recipient", "sender_refused", "nothing_kept", "store_failed"]


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
        self.host = host
        self.port = port
        self.max_message_bytes = max_message_bytes
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
        handler = _InboxHandler(self.routes, self._record)

        def make_protocol() -> SMTP:
            return SMTP(
                handler,
                data_size_limit=self.max_message_bytes,
                enable_SMTPUTF8=True,
                hostname=hostname,
                ident="connector-pipelines inbox",
                tls_context=tls_context,
                require_starttls=self.require_tls,
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
        log.info("email receiver listening on %s:%s for %s", self.host, self.port, ", ".join(self.routes))
        return self

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


class _InboxHandler:
    """aiosmtpd's handler hooks: routing and sender checks at RCPT, saving attachments at DATA."""

    def __init__(self, routes: dict[str, InboxRoute], record: Callable[[InboxEvent], None]):
        self.routes = routes
        self.record = record
        self._store_slots: asyncio.Semaphore | None = None

    async def handle_RCPT(  # aiosmtpd's hook name
        self, server: Any, session: Any, envelope: Any, address: str, rcpt_options: list[str]
    ) -> str:
        sender = envelope.mail_from or ""
        route = self.routes.get(address.strip().lower())
        if route is None:
            self.record(InboxEvent("unknown_recipient", sender, address))
            return "550 5.1.1 no such mailbox"
        if not route.allows(sender):
            self.record(InboxEvent("sender_refused", sender, route.address, detail="not on the allow-list"))
            return "550 5.7.1 sender not allowed"
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
                kept = await loop.run_in_executor(None, self._store, envelope.original_content, sender, routes)
            except OSError as exc:
                # A temporary failure (disk full): the sender's server retries later. Files already saved from
                # this message are saved again then, as "name (2).ext"; the sensor's checksum catches those.
                for route in routes:
                    self.record(InboxEvent("store_failed", sender, route.address, detail=str(exc)))
                return "451 4.3.0 the message could not be stored; try again later"
        if not kept:
            for route in routes:
                self.record(InboxEvent("nothing_kept", sender, route.address, detail="no attachment was kept"))
            return "554 5.6.0 no attachment with a name this address accepts; nothing was kept"
        return f"250 2.0.0 OK, {kept} file{'s' if kept > 1 else ''} kept"

    def _store(self, content: bytes, sender: str, routes: list[InboxRoute]) -> int:
        """Save the message's acceptable attachments into each route's folder; returns how many were saved."""
        message = email.message_from_bytes(content, policy=email.policy.default)
        attachments = list(_attachments(message))
        kept = 0
        for route in routes:
            for name, part in attachments:
                problem = unsafe_name_reason(name)
                if problem is None and not route.pattern(name):
                    problem = "the name does not match the connector's pattern"
                if problem is not None:
                    self.record(InboxEvent("skipped", sender, route.address, attachment=name, detail=problem))
                    continue
                data = part.get_payload(decode=True) or b""
                path = save_atomically(route.folder, name, data)
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
        return kept


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
        for candidate in _candidate_names(name):
            target = folder / candidate
            try:
                # A link is atomic and, unlike rename, never replaces an existing file.
                os.link(temporary, target)
            except FileExistsError:
                continue
            _fsync_folder(folder)  # the 250 reply promises the file is on disk
            return target
        raise FileExistsError(f"{folder}: {_MAX_COPIES} files named like {name!r} already exist")
    finally:
        temporary.unlink(missing_ok=True)


def _candidate_names(name: str) -> Iterator[str]:
    """orders.csv.gz, then orders (2).csv.gz, orders (3).csv.gz, ..."""
    yield name
    extension = Path(name).suffix
    if extension.lower() == ".gz":
        extension = Path(name[: -len(extension)]).suffix + extension  # .csv.gz is one extension
    stem = name[: len(name) - len(extension)]
    for copy in itertools.islice(itertools.count(2), _MAX_COPIES):
        yield f"{stem} ({copy}){extension}"


def _fsync_folder(folder: Path) -> None:
    descriptor = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
