"""One integration configuration's delivery: diff the data set against the ledger, send, record every outcome.

The run, for each batch of source rows:
1. map the rows (a row that fails to map fails alone, with its reason);
2. fingerprint each mapped record and decide per record, against the ledger: unchanged, skipped (roles, sync
   mode), or an operation to send (create, update; deletes come from the change log or a vanished key);
3. send in chunks: mark the chunk `in_flight` with idempotency keys and commit, send (retries, rate and
   concurrency limits live in the HTTP client), then commit the outcomes, the audit rows and the write-back.

Sending runs on one asyncio loop; the ledger, audit file and write-back are written on one worker thread, in
order, so the next chunk's requests go out while the last chunk's outcomes are being committed.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import datetime as dt
import gc
import hashlib
import logging
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa

from connector_pipelines.integration.audit import AuditFile
from connector_pipelines.integration.data_set import column_values, record_keys
from connector_pipelines.integration.decide import (
    HELD_IN_DOUBT,
    DecisionRules,
    decide,
    decide_delete,
    owner_refusal,
)
from connector_pipelines.integration.key_set import KeySet
from connector_pipelines.integration.progress import Progress
from connector_pipelines.integration.recovery import RecoveryRule, recovery_rules
from connector_pipelines.integration.retries import DEAD_LETTER, RetrySchedule, failed_runs_before
from connector_pipelines.integration.success import SuccessCheck, read_target_ref
from connector_pipelines.integration.write_back import WriteBack
from connector_pipelines.mapping import CompiledMapping, FieldRule, TargetField
from connector_pipelines.mapping.templates import (
    RECORDS,
    TemplateError,
    compile_body,
    compile_headers,
    compile_path,
    encode_json,
)
from connector_pipelines.spec.connections import HttpConnection
from connector_pipelines.spec.integration import Configuration, IntegrationConnector, RequestSpec
from connector_pipelines.state.ledger import (
    AttemptRow,
    DeliveryLedger,
    LedgerEntry,
    RecordUpdate,
    batch_idempotency_key,
    idempotency_key,
    target_ref_refusal,
    utc_now,
)
from connector_pipelines.transports.http import SETTLING, HttpDeliveryClient, HttpOutcome, HttpRequest

# A failure that counts as a failed run (retry_across_runs): the target answered about the record itself, a 4xx
# but 408 and 429, or a 2xx whose body fails the success criteria. A 5xx, 429, 408 or no answer says nothing
# about the record (the target is down or busy): such a record is tried again by the next run, uncounted, so an
# outage does not turn every record it touched into a dead letter.
REFUSING = SETTLING | frozenset(range(200, 300))

OPERATIONS = ("create", "update", "delete")
BATCH_NOT_WHOLE = (
    "held for review: it went out in a batch whose outcome is unknown, and that batch cannot be sent again as it "
    "was (another of its records changed, vanished or was not read), so its Idempotency-Key cannot be reused; "
    "check the target, then push the key"
)
SEND_CHUNK = 2000
SAMPLE_ROWS = 200
PLAN_SAMPLES = 3

log = logging.getLogger(__name__)

# A run allocates millions of objects that live for one chunk (requests, responses, outcomes, ledger rows). With
# CPython's default threshold (700 allocations) the cyclic collector runs thousands of times per 100,000 records
# and walks each chunk's live objects again and again, and the whole heap (Dagster's included) on every full
# collection: a quarter of a single-record run's CPU (bench/integration.py). During a run it collects less often.
GC_THRESHOLD = 50_000
_gc_lock = threading.Lock()
_gc_runs = 0
_gc_saved: tuple[int, int, int] | None = None


@contextlib.contextmanager
def _fewer_collections() -> Iterator[None]:
    """Raise the collector's first threshold while any run lasts; restore it when the last one ends (unless
    something else changed it meanwhile). A threshold of 0 (automatic collection off) is left alone."""
    global _gc_runs, _gc_saved
    with _gc_lock:
        if _gc_runs == 0:
            current = gc.get_threshold()
            if 0 < current[0] < GC_THRESHOLD:
                _gc_saved = current
                gc.set_threshold(GC_THRESHOLD, *current[1:])
        _gc_runs += 1
    try:
        yield
    finally:
        with _gc_lock:
            _gc_runs -= 1
            if _gc_runs == 0 and _gc_saved is not None:
                if gc.get_threshold()[0] == GC_THRESHOLD:
                    gc.set_threshold(*_gc_saved)
                _gc_saved = None


@dataclass(frozen=True)
class DeliveryScope:
    """What one run covers, beyond "every record of the data set"."""

    full: bool = False  # resend every record, whatever its fingerprint
    keys: frozenset[str] | None = None  # a manual push of these record keys (sent even when unchanged)
    operations: frozenset[str] = frozenset(OPERATIONS)  # what the triggers asked for
    deletes: Mapping[str, str] | None = None  # record key -> operation, from a change log range
    complete: bool = True  # the batches hold the whole data set, so a missing key means the record vanished
    detect_deletes: bool = False  # delete vanished records even outside mirror mode (an on_delete sensor)


@dataclass
class DeliveryReport:
    """What a run did, for metadata, the CLI and the checks."""

    configuration: str
    counts: dict[str, int] = field(
        default_factory=lambda: dict.fromkeys(
            (
                "read",
                "mapped",
                "unchanged",
                "sent",
                "delivered",
                "failed",
                "skipped",
                "held",
                "create",
                "update",
                "delete",
                "requests",
                "in_doubt",
                "backoff",  # refused in an earlier run, waiting for its retry time: not sent
                "dead_letter",  # dead letters this run read (not sent) or made (counted in failed too)
                "new_dead_letter",  # records this run made dead letters
            ),
            0,
        )
    )
    rows: list[dict] = field(default_factory=list)  # the first SAMPLE_ROWS records touched
    failures: list[dict] = field(default_factory=list)  # the first failures
    samples: dict[str, list[Any]] = field(default_factory=lambda: {op: [] for op in OPERATIONS})
    audit_path: str | None = None
    client_stats: dict[str, Any] = field(default_factory=dict)
    # Per operation, what becomes of a record in doubt (`integration.recovery`), for `plan` and the metadata.
    recovery: dict[str, RecoveryRule] = field(default_factory=dict)
    # The configuration's records per ledger status once the run's outcomes are committed (None for a plan).
    ledger_counts: dict[str, int] | None = None
    # The configuration's latest attempt id before the run: the attempts after it are the run's own.
    attempts_before: int = 0

    @property
    def rejected_rate(self) -> float:
        judged = self.counts["delivered"] + self.counts["failed"]
        return self.counts["failed"] / judged if judged else 0.0


@dataclass(slots=True)
class _Send:
    key: str
    operation: str
    record: dict | None  # the mapped record (None for deletes)
    fingerprint: str | None
    version: int
    idempotency_key: str
    entry: LedgerEntry | None
    batch_key: str | None = None
    probe: bool = False  # in doubt: ask the target (the lookup request) whether it landed before sending again
    failed_runs: int = 0  # the runs this version failed in before (retry_across_runs); 0 for a forced send


def build_mapping(
    configuration: Configuration, target_fields: Iterable[TargetField], lookups: Mapping
) -> CompiledMapping:
    rules = [FieldRule.from_spec(rule) for rule in configuration.mapping]
    return CompiledMapping(rules, list(target_fields), lookups)


def target_fields(connector: IntegrationConnector) -> list[TargetField]:
    return [TargetField(f.name, f.type, f.required) for f in connector.integration.target.fields]


def fingerprints(columns: Mapping[str, list]) -> list[str]:
    """The mapped payload's hash for every row of a batch, computed column-wise.

    Fields are taken in name order, so reordering the mapping rules or changing the request template alone is
    not a change. `repr` of the typed values (text, numbers, Decimals, dates) is exact and stable, and about five
    times cheaper than JSON-encoding each record.
    """
    names = sorted(columns)
    blake2b = hashlib.blake2b
    return [blake2b(repr(values).encode(), digest_size=16).hexdigest() for values in zip(*(columns[n] for n in names))]


class _Request:
    """A compiled RequestSpec: method, path, headers and body from one record."""

    def __init__(self, spec: RequestSpec):
        self.method = spec.method
        self.path = compile_path(spec.path)
        self.headers = compile_headers(spec.headers)
        self.body = compile_body(spec.body) if spec.body is not None else None

    def build(self, values: Mapping[str, Any], key: str | None, retry_in_doubt: bool = True) -> HttpRequest:
        return HttpRequest(
            method=self.method,
            path=self.path(values),
            body=encode_json(self.body(values)).encode() if self.body is not None else None,
            headers=self.headers(values),
            idempotency_key=key,
            retry_in_doubt=retry_in_doubt,
        )


class IntegrationDelivery:
    """Delivers one configuration of one integration for one run."""

    def __init__(
        self,
        connector: IntegrationConnector,
        configuration: Configuration,
        ledger: DeliveryLedger,
        *,
        run_id: str,
        lookups: Mapping[str, Mapping] | None = None,
        close_lookups: Callable[[], None] | None = None,
        allowed_owners: set[str] | None = None,
        client_factory: Callable[[], HttpDeliveryClient] | None = None,
        audit: AuditFile | None = None,
        write_back: WriteBack | None = None,
        logger: logging.Logger | Any = log,
        target_connection: HttpConnection | None = None,
        clock: Callable[[], dt.datetime] = utc_now,
    ):
        """`target_connection` says whether the target honours Idempotency-Key (for the recovery rules); a run
        without it reads the connection of the client it sends with. `clock` is the time the run judges retry
        times by (aware UTC). `close_lookups` releases the lookups' connections: called at the end of each entry
        point (a lookup used again connects again) and by `close()`."""
        self.connector = connector
        self.spec = connector.integration
        self.configuration = configuration
        self.ledger = ledger
        self.run_id = run_id
        self.mapping = build_mapping(configuration, target_fields(connector), lookups or {})
        self._close_lookups = close_lookups
        self.allowed_owners = allowed_owners
        self.client_factory = client_factory
        self.audit = audit
        self.write_back = write_back
        self.log = logger
        self.success = SuccessCheck(configuration.success)
        self.clock = clock
        retry = self.spec.retry_across_runs
        self.retry = RetrySchedule(retry.max_attempts, retry.initial_backoff_delta, retry.max_backoff_delta)
        self.create_request = _Request(configuration.request)
        self.update_request = _Request(configuration.update or configuration.request)
        self.delete_request = _Request(configuration.delete) if configuration.delete else None
        batch = configuration.batch
        self.batch_request = (
            _Request(RequestSpec(method=batch.method, path=batch.path, headers=batch.headers, body=batch.body))
            if batch
            else None
        )
        self.record_body = compile_body(configuration.request.body) if configuration.request.body is not None else None
        lookup = configuration.lookup
        self.lookup_request = (
            _Request(RequestSpec(method=lookup.method, path=lookup.path, headers=lookup.headers)) if lookup else None
        )
        self.lookup_found = SuccessCheck(lookup.success) if lookup else None
        self.recovery: dict[str, RecoveryRule] = {}
        self.use_connection(target_connection)
        self.target_connection_unknown = target_connection is None
        self._forced = False  # the run sends records even when unchanged, held or in doubt (set by `_decide`)
        self._rules: DecisionRules | None = None  # the run's (set by `_decide`)
        self._worker = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="ledger")
        # Write-back goes to another database, on its own thread: it need not wait for the ledger, nor hold it up.
        self._write_back_worker = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="write-back")
        self._pending_writes: list[asyncio.Future] = []
        self._observe: Callable[[str, Any], None] | None = None  # `plan`'s view of every record's Decision
        self._progress: Progress | None = None  # a run's progress lines (set by `run`)

    @property
    def name(self) -> str:
        return self.connector.name

    def use_connection(self, connection: HttpConnection | None) -> None:
        """Take the recovery rules from what this connection declares (None: nothing is declared)."""
        honours = bool(getattr(connection, "honours_idempotency_key", False))
        self.recovery = recovery_rules(self.configuration, self.spec.recovery, honours)

    def _resends_blindly(self, operation: str) -> bool:
        """Whether a try of this operation that got no answer may be repeated (the client's own retries)."""
        rule = self.recovery.get(operation)
        return rule is None or rule.mode == "resend"

    def close(self) -> None:
        """Release the lookups' connections (the entry points do it too; a delivery may still be used after)."""
        if self._close_lookups is not None:
            self._close_lookups()

    # ---- entry points ---------------------------------------------------------------------------------------

    def preview(self, batches: Iterable[pa.RecordBatch], rows: int = 10) -> list[dict]:
        """The first mapped records with the request each would make (nothing is sent or recorded)."""
        out: list[dict] = []
        try:
            for batch in batches:
                mapped = self.mapping.map_batch(batch)
                keys = record_keys(batch, self.spec.data_set.key)
                for key, record, error in zip(keys, mapped.records(), mapped.errors):
                    if error is not None:
                        out.append({"key": key, "error": error})
                    else:
                        request = self.create_request.build({**record, "key": key}, "preview")
                        out.append(_describe_request(key, "create", record, request))
                    if len(out) >= rows:
                        return out
            return out
        finally:
            self.close()

    def plan(
        self,
        batches: Iterable[pa.RecordBatch],
        scope: DeliveryScope = DeliveryScope(),
        sink: Callable[[list[dict]], None] | None = None,
    ) -> DeliveryReport:
        """A dry run: what a run would send, with sample requests. Nothing is sent or recorded.

        With a `sink`, every record's planned row (`planned_row`) is handed to it, a source batch at a time, so a
        caller can stream them to a file without holding them all.
        """
        report = DeliveryReport(self.configuration.name, recovery=dict(self.recovery))
        # What the next run would do first: a dead run's in-flight markers become in-flight records.
        self.ledger.recover_in_flight(self.name, self.configuration.name)
        planned: list[dict] = []
        if sink is not None:
            self._observe = lambda key, decision: planned.append(planned_row(key, decision))
        try:
            for sends, _updates, _attempts in self._decide(batches, scope, report):
                rows: dict[str, dict] = {}
                for row in planned:  # a key read twice: its first row is the one sent
                    rows.setdefault(row["record_key"], row)
                for send in sends:
                    report.counts[send.operation] += 1
                    samples = report.samples[send.operation]
                    try:
                        request = self._request_for(send)
                    except TemplateError as exc:  # the run would fail this record without a request
                        self._count(report, send.key, send.operation, "failed", None, str(exc), None, None)
                        if send.key in rows:
                            rows[send.key]["reason"] = str(exc)
                        continue
                    if len(samples) < PLAN_SAMPLES:
                        samples.append(_describe_request(send.key, send.operation, send.record, request))
                    if send.key in rows:
                        body = request.body.decode() if request.body else None
                        rows[send.key].update(method=request.method, path=request.path, body=body)
                if sink is not None and planned:
                    sink(planned[:])
                    planned.clear()
            if sink is not None and planned:
                sink(planned[:])
        finally:
            self._observe = None
            self.close()
        return report

    def run(
        self, batches: Iterable[pa.RecordBatch], scope: DeliveryScope = DeliveryScope(), total: int | None = None
    ) -> DeliveryReport:
        """Deliver. Every outcome is in the ledger (and the audit file) before this returns. `total` (the records
        the batches hold, when known) gives the progress lines their share and time left."""
        if self.client_factory is None:
            raise ValueError("a delivery run needs an HTTP client")
        report = DeliveryReport(self.configuration.name)
        self._progress = Progress(self.configuration.name, total)
        try:
            # One delivering run per configuration: a second one waits here, then decides from what this one recorded.
            with self.ledger.delivering(self.name, self.configuration.name, on_wait=self._say_waiting):
                with _fewer_collections():
                    asyncio.run(self._run(batches, scope, report))
        finally:
            self._worker.shutdown(wait=True)
            self._write_back_worker.shutdown(wait=True)
            self.close()
            if self.audit is not None:
                report.audit_path = self.audit.close()
        return report

    def _say_waiting(self, waited: float) -> None:
        self.log.info(
            f"{self.configuration.name}: another run is delivering this configuration; waiting for it to finish "
            f"({waited:.0f} s so far), then deciding from what it recorded"
        )

    # ---- deciding -------------------------------------------------------------------------------------------

    def _decide(
        self, batches: Iterable[pa.RecordBatch], scope: DeliveryScope, report
    ) -> Iterator[tuple[list[_Send], list[RecordUpdate], list[AttemptRow]]]:
        """Per source batch: the records to send, and the ledger rows for those that fail or are skipped here.

        What happens to each record is `decide`'s answer; this loop maps, fingerprints, counts and builds the rows.
        It holds one batch at a time: the ledger's entries for the batch's keys (read as the batch comes; a key is
        in one batch only, or it is a duplicate), and the keys read so far as 8-byte hashes (`KeySet`).
        """
        spec, configuration = self.spec, self.configuration
        mode = configuration.sync_mode
        rules = DecisionRules(
            sync_mode=mode,
            full=scope.full,
            pushed=scope.keys is not None,
            operations=scope.operations,
            recovery={operation: rule.mode for operation, rule in self.recovery.items()},
            retry=self.retry,
            now=self.clock(),
        )
        self._forced = rules.forced
        self._rules = rules
        owner_column = spec.data_set.owner if self.allowed_owners is not None else None
        track_seen = scope.complete and (mode == "mirror" or scope.detect_deletes)
        # The keys read so far: a key twice in one read would be sent twice under one idempotency key (or race two
        # versions); and, after a complete read, the ledger's keys missing from it are the vanished records.
        read_keys = KeySet()
        counts = report.counts
        for batch in batches:
            if batch.num_rows == 0:
                continue
            keys = record_keys(batch, spec.data_set.key)
            wanted = None if scope.keys is None else [k in scope.keys for k in keys]
            if wanted is not None and not any(wanted):
                continue
            if wanted is not None:
                batch = batch.filter(pa.array(wanted, type=pa.bool_()))
                keys = [k for k, w in zip(keys, wanted) if w]
            repeated = read_keys.add(keys).tolist()
            state = self.ledger.entries(self.name, configuration.name, keys)
            mapped = self.mapping.map_batch(batch)
            errors = mapped.errors
            targets = list(mapped.columns)
            target_columns = [mapped.columns[name] for name in targets]
            row_fingerprints = fingerprints(mapped.columns)
            owners = column_values(batch, owner_column, "data_set.owner") if owner_column else None
            sends: list[_Send] = []
            updates: list[RecordUpdate] = []
            attempts: list[AttemptRow] = []
            now = utc_now()
            for i, key in enumerate(keys):
                counts["read"] += 1
                entry = state.get(key)
                fp = row_fingerprints[i]
                refused = (
                    owner_refusal(owners[i], self.allowed_owners, spec.roles.allowed) if owners is not None else None
                )
                decision = decide(
                    entry, fp, rules, duplicate=repeated[i], mapping_error=errors[i], owner_refused=refused
                )
                if self._observe is not None:
                    self._observe(key, decision)
                action, operation = decision.action, decision.operation
                if action == "duplicate":
                    error = decision.reason
                    attempts.append(AttemptRow(key, operation, "failed", None, None, 0, None, error, None, now, now))
                    self._count(report, key, operation, "failed", None, error, None, None)
                    continue
                if action == "fail":
                    self._fail_locally(key, operation, entry, decision.reason, updates, attempts, report, now)
                    continue
                counts["mapped"] += 1
                if action == "unchanged":
                    counts["unchanged"] += 1
                elif action == "held":
                    counts["held"] += 1
                elif action == "skip":
                    self._skip(key, operation, entry, fp, decision.reason, updates, attempts, report, now)
                elif action == "hold_in_doubt":
                    self._hold(key, operation, entry, updates, attempts, report, now, decision.reason)
                elif action in ("backoff", "dead_letter"):
                    self._not_retried(report, key, operation, entry, action, decision.reason)
                elif action in ("send", "resend", "probe"):
                    record = dict(zip(targets, [column[i] for column in target_columns]))
                    if action != "send":
                        # Under the key it was first sent with, so a target that did apply it answers with its
                        # stored response (a probe asks first, and sends under that key only what did not land).
                        send = _Send(
                            key,
                            operation,
                            record,
                            fp,
                            entry.version,
                            entry.idempotency_key,
                            entry,
                            entry.batch_key,
                            probe=action == "probe",
                        )
                    else:
                        version = (entry.version if entry else 0) + 1
                        ikey = idempotency_key(self.name, configuration.name, key, fp, version)
                        send = _Send(key, operation, record, fp, version, ikey, entry)
                    if entry is not None:
                        send.failed_runs = failed_runs_before(
                            entry.status, entry.fingerprint, entry.failed_runs, fp, rules.forced
                        )
                    sends.append(send)
                # "not_in_scope": the triggers did not ask for this operation; nothing is recorded.
            yield sends, updates, attempts
        yield from self._deletes(scope, read_keys if track_seen else None, report)

    def _deletes(self, scope: DeliveryScope, seen: KeySet | None, report) -> Iterator[tuple]:
        """Deletes: the change log's, then (after a complete read) the ledger's records the read did not see,
        streamed from the ledger in key order a page at a time."""
        if self.delete_request is None or "delete" not in scope.operations:
            return
        # Every outcome of the read's own records committed first, so the pages show the ledger as it now is.
        self._worker.submit(lambda: None).result()
        name, configuration = self.name, self.configuration.name
        if scope.deletes:
            logged = [key for key, op in scope.deletes.items() if op == "delete"]
            for start in range(0, len(logged), SEND_CHUNK):
                chunk = logged[start : start + SEND_CHUNK]
                entries = self.ledger.entries(name, configuration, chunk)
                yield from self._delete_chunk([(key, entries.get(key)) for key in chunk], scope, report)
        if seen is not None:
            logged_keys = set(scope.deletes or ())
            for page in self.ledger.iter_entries(name, configuration, chunk=SEND_CHUNK):
                present = seen.contains([key for key, _ in page]).tolist()
                vanished = [pair for pair, there in zip(page, present) if not there and pair[0] not in logged_keys]
                if vanished:
                    yield from self._delete_chunk(vanished, scope, report)

    def _delete_chunk(self, candidates: list[tuple[str, LedgerEntry | None]], scope: DeliveryScope, report):
        sends, updates, attempts = [], [], []
        now = utc_now()
        for key, entry in candidates:
            decision = decide_delete(
                entry,
                in_scope=scope.keys is None or key in scope.keys,
                roles_apply=self.allowed_owners is not None,
                recovery=self.recovery["delete"].mode if not self._forced else "resend",
                rules=self._rules,
            )
            if self._observe is not None:
                self._observe(key, decision)
            action = decision.action
            if action == "skip":
                self._skip(key, "delete", entry, entry.fingerprint, decision.reason, updates, attempts, report, now)
            elif action == "hold_in_doubt":
                self._hold(key, "delete", entry, updates, attempts, report, now, decision.reason)
            elif action in ("backoff", "dead_letter"):
                self._not_retried(report, key, "delete", entry, action, decision.reason)
            elif action in ("resend", "probe", "send"):
                if action == "send":
                    version = entry.version + 1
                    ikey = idempotency_key(self.name, self.configuration.name, key, "delete", version)
                    send = _Send(key, "delete", None, None, version, ikey, entry)
                else:  # in doubt: again under its first key (a probe asks first)
                    send = _Send(
                        key, "delete", None, None, entry.version, entry.idempotency_key, entry, probe=action == "probe"
                    )
                send.failed_runs = failed_runs_before(
                    entry.status, entry.fingerprint, entry.failed_runs, None, self._forced
                )
                sends.append(send)
            # "absent" (nothing to delete at the target) and "not_in_scope" (a push of other keys): nothing to do.
        if sends or updates:
            yield sends, updates, attempts

    # ---- sending --------------------------------------------------------------------------------------------

    async def _run(self, batches: Iterable[pa.RecordBatch], scope: DeliveryScope, report: DeliveryReport) -> None:
        loop = asyncio.get_running_loop()
        name, configuration = self.name, self.configuration.name
        # A run that died left its chunks' in-flight markers: their records become in-flight records first.
        await loop.run_in_executor(self._worker, self.ledger.recover_in_flight, name, configuration)
        report.attempts_before = await loop.run_in_executor(
            self._worker, self.ledger.last_attempt_id, name, configuration
        )
        async with self.client_factory() as client:
            if self.target_connection_unknown:
                self.use_connection(getattr(client, "connection", None))
            report.recovery = dict(self.recovery)
            # Records resent in the batch they were in doubt in: sent last, together, so that each batch is whole
            # again (same records, so the same key) whatever source batch or chunk its records were read in.
            regroup: list[_Send] = []
            for sends, updates, attempts in self._decide(batches, scope, report):
                if updates:
                    self._write_later(loop, updates, attempts)
                if self.batch_request is not None:
                    regroup += [s for s in sends if s.batch_key and s.operation != "delete" and not s.probe]
                    sends = [s for s in sends if not (s.batch_key and s.operation != "delete" and not s.probe)]
                for start in range(0, len(sends), SEND_CHUNK):
                    await self._send_chunk(loop, client, sends[start : start + SEND_CHUNK], report)
                    self._log_progress(report)
                self._log_progress(report)
            for chunk in _whole_batches(regroup, SEND_CHUNK):
                await self._send_chunk(loop, client, chunk, report)
                self._log_progress(report)
            report.client_stats = dict(client.stats)
        for future in self._pending_writes:
            await future  # surfaces a failed write
        report.ledger_counts = await loop.run_in_executor(
            self._worker, self.ledger.counts, self.name, self.configuration.name
        )

    def _log_progress(self, report: DeliveryReport) -> None:
        line = self._progress.line(report.counts) if self._progress is not None else None
        if line is not None:
            self.log.info(line)

    async def _send_chunk(self, loop, client: HttpDeliveryClient, sends: list[_Send], report: DeliveryReport) -> None:
        batched = self.batch_request is not None
        updates: list[RecordUpdate] = []
        attempts: list[AttemptRow] = []
        if any(s.probe for s in sends):
            sends = await self._probe(client, sends, updates, attempts, report)
        groups = self._batches(sends, updates, attempts, report) if batched else []
        if batched:
            sends = [s for group in groups for s in group] + [s for s in sends if s.operation == "delete"]
        in_flight = [_in_flight(s) for s in sends]
        # Committed before any request leaves: the crash-safety of the whole design rests on this order. One marker
        # for the chunk; the outcomes' commit removes it.
        markers = []
        if in_flight:
            markers.append(
                await loop.run_in_executor(
                    self._worker, self.ledger.mark_in_flight, self.name, self.configuration.name, self.run_id, in_flight
                )
            )
        report.counts["sent"] += len(sends)
        if batched:
            singles = [s for s in sends if s.operation == "delete"]
            results = await asyncio.gather(
                *(self._send_batch(loop, client, group, markers) for group in groups),
                *(self._send_one(client, s) for s in singles),
            )
            outcomes = [pair for result in results for pair in (result if isinstance(result, list) else [result])]
        else:
            outcomes = await asyncio.gather(*(self._send_one(client, s) for s in sends))
        for send, outcome in outcomes:
            self._judge(send, outcome, updates, attempts, report)
        self._write_later(loop, updates, attempts, markers)

    def _batches(self, sends: list[_Send], updates, attempts, report) -> list[list[_Send]]:
        """Batches of `batch.size`; records resent after a crash or an unknown outcome go out in their original
        batch, under its key. A batch that cannot be formed again as it was (one of its records changed, vanished
        or was not read) would need a new key for records the target may hold already: its records are held for
        review instead, unless the run is forced (a push or a full run sends them in new batches)."""
        size = self.configuration.batch.size
        by_old_batch: dict[str, list[_Send]] = {}
        fresh: list[_Send] = []
        for send in sends:
            if send.operation == "delete":
                continue
            if send.batch_key:
                by_old_batch.setdefault(send.batch_key, []).append(send)
            else:
                fresh.append(send)
        groups = []
        now = utc_now()
        for old_key, group in by_old_batch.items():
            group.sort(key=lambda s: s.idempotency_key)
            if batch_idempotency_key(s.idempotency_key for s in group) == old_key:
                groups.append(group)
            elif self._forced:
                fresh += group
            else:
                for send in group:
                    self._hold(send.key, send.operation, send.entry, updates, attempts, report, now, BATCH_NOT_WHOLE)
        groups += [fresh[i : i + size] for i in range(0, len(fresh), size)]
        for group in groups:
            group.sort(key=lambda s: s.idempotency_key)
            key = batch_idempotency_key(s.idempotency_key for s in group)
            for send in group:
                send.batch_key = key
        return groups

    async def _probe(self, client: HttpDeliveryClient, sends: list[_Send], updates, attempts, report) -> list[_Send]:
        """Ask the target about each record in doubt (the lookup request): one it holds is recorded as delivered
        (a delete: one it no longer holds), one it does not hold is sent again, one it cannot tell about stays in
        doubt. Returns what to send."""
        probes = [s for s in sends if s.probe]
        keep = [s for s in sends if not s.probe]
        answers = await asyncio.gather(*(self._lookup(client, s) for s in probes))
        for send, (outcome, verdict) in zip(probes, answers):
            send.probe = False
            landed = verdict == "found" if send.operation != "delete" else verdict == "absent"
            if verdict in ("found", "absent") and not landed:
                send.batch_key = None  # a new batch of what did not land: what did must not go out again
                keep.append(send)
            else:
                self._judge_probe(send, outcome, verdict, landed, updates, attempts, report)
        return keep

    async def _lookup(self, client: HttpDeliveryClient, send: _Send) -> tuple[HttpOutcome | None, str]:
        """The lookup's answer and what it says: "found", "absent", or why it tells nothing."""
        values = {**(send.record or {}), "key": send.key, "target_ref": send.entry.target_ref if send.entry else None}
        try:
            request = self.lookup_request.build(values, None)
        except TemplateError as exc:
            return None, f"the lookup request could not be built: {exc}"
        outcome = await client.send(request)
        if outcome.status is None or outcome.error is not None:
            return outcome, f"the lookup got no usable answer ({outcome.error or 'no response'})"
        if self.lookup_found.evaluate(outcome) is None:
            return outcome, "found"
        if 200 <= outcome.status < 300 or outcome.status in (404, 410):
            return outcome, "absent"
        return outcome, f"the lookup answered {outcome.status}, which says neither that the record is there nor not"

    def _judge_probe(self, send: _Send, outcome, verdict: str, landed: bool, updates, attempts, report) -> None:
        """A record the lookup found landed (delivered, not sent again), or could not tell about (still in doubt)."""
        entry = send.entry
        now = utc_now()
        http_status = outcome.status if outcome is not None else None
        requests = outcome.attempts if outcome is not None else 0
        body = outcome.body if outcome is not None else None
        target_ref = entry.target_ref if entry else None
        if landed:
            status = "delivered"
            error = "the lookup found that it had landed: not sent again"
            lookup = self.configuration.lookup
            if send.operation != "delete" and body and lookup.target_ref:
                found, note = read_target_ref(body, lookup.target_ref)
                note = note or target_ref_refusal(found)
                if note is None and found is not None:
                    target_ref = found
                elif note is not None:
                    error += f"; {note}"
            delivered_fp = send.fingerprint
        else:
            status = "in_flight"
            error = f"{verdict}; it may have landed, so it stays in doubt under its key, and the next run asks again"
            delivered_fp = entry.delivered_fingerprint if entry else None
        updates.append(
            RecordUpdate(
                record_key=send.key,
                status=status,
                operation=send.operation,
                fingerprint=send.fingerprint,
                delivered_fingerprint=delivered_fp,
                version=send.version,
                idempotency_key=send.idempotency_key,
                attempts=(entry.attempts if entry else 0) + requests,
                batch_key=None if landed else send.batch_key,
                last_error=error,
                http_status=http_status,
                target_ref=target_ref,
                delivered_at=now if landed else None,
                failed_runs=0 if landed else send.failed_runs,
            )
        )
        outcome_name = "delivered" if landed else "in_doubt"
        attempts.append(
            AttemptRow(
                send.key,
                send.operation,
                outcome_name,
                send.idempotency_key,
                http_status,
                requests,
                body,
                error,
                target_ref,
                outcome.started_at if outcome is not None else now,
                outcome.finished_at if outcome is not None else now,
            )
        )
        report.counts["requests"] += requests
        if landed:
            self._count(
                report, send.key, send.operation, "delivered", http_status, error, send.idempotency_key, target_ref
            )
        else:
            report.counts["in_doubt"] += 1
            self._count(
                report, send.key, send.operation, "failed", http_status, error, send.idempotency_key, target_ref
            )

    async def _send_one(self, client: HttpDeliveryClient, send: _Send) -> tuple[_Send, HttpOutcome | str]:
        try:
            request = self._request_for(send)
        except TemplateError as exc:
            return send, str(exc)
        return send, await client.send(request)

    async def _send_batch(
        self, loop, client: HttpDeliveryClient, group: list[_Send], markers: list[int]
    ) -> list[tuple[_Send, Any]]:
        values = {RECORDS: [self._record_body(s) for s in group]}
        request = self.batch_request.build(values, group[0].batch_key, self._resends_blindly("create"))
        outcome = await client.send(request)
        rejected_whole = outcome.status is not None and 400 <= outcome.status < 500 and outcome.status not in (408, 429)
        if self.success.evaluate(outcome) is None or not rejected_whole or len(group) == 1 or outcome.in_doubt:
            return [(send, outcome) for send in group]
        # A batch refused as a whole: split it to find the records that are refused, delivering the rest.
        middle = len(group) // 2
        halves = [group[:middle], group[middle:]]
        rewrites = []
        for half in halves:
            key = batch_idempotency_key(s.idempotency_key for s in half)
            for send in half:
                send.batch_key = key
                rewrites.append(_in_flight(send))
        markers.append(
            await loop.run_in_executor(
                self._worker, self.ledger.mark_in_flight, self.name, self.configuration.name, self.run_id, rewrites
            )
        )
        results = await asyncio.gather(*(self._send_batch(loop, client, half, markers) for half in halves))
        return [pair for result in results for pair in result]

    def _request_for(self, send: _Send) -> HttpRequest:
        target_ref = send.entry.target_ref if send.entry else None
        retry = self._resends_blindly(send.operation)
        if send.operation == "delete":
            return self.delete_request.build({"key": send.key, "target_ref": target_ref}, send.idempotency_key, retry)
        values = {**send.record, "key": send.key, "target_ref": target_ref}
        request = self.create_request if send.operation == "create" else self.update_request
        return request.build(values, send.idempotency_key, retry)

    def _record_body(self, send: _Send) -> Any:
        values = {**send.record, "key": send.key, "target_ref": send.entry.target_ref if send.entry else None}
        return self.record_body(values) if self.record_body is not None else send.record

    # ---- recording outcomes ---------------------------------------------------------------------------------

    def _judge(self, send: _Send, outcome: HttpOutcome | str, updates, attempts, report: DeliveryReport) -> None:
        entry = send.entry
        previous_attempts = entry.attempts if entry else 0
        # Resent under the key of an attempt that may have landed: until the target answers for that key, the record
        # stays in doubt under it (a new key only ever follows a definitive answer).
        resent = (
            entry is not None
            and entry.status in ("in_flight", "pending")
            and (entry.idempotency_key == send.idempotency_key)
        )
        batch_key = None
        note = None
        if isinstance(outcome, str):  # the request could not even be built (an empty path placeholder)
            status, error, requests, started, finished, http_status, body = (
                entry.status if resent else "failed",
                outcome,
                0,
                None,
                utc_now(),
                None,
                None,
            )
            if resent:
                batch_key = send.batch_key
        else:
            http_status, body, requests = outcome.status, outcome.body, outcome.attempts
            started, finished = outcome.started_at, outcome.finished_at
            reason = self.success.evaluate(outcome)
            mode = self.configuration.sync_mode
            # An earlier try of this version may have been applied (in this run or before): only a delivery or an
            # answer about the request itself (a 4xx but 408/429) settles that; a 5xx, 429 or a 2xx that fails the
            # criteria may come from in front of the target's key check.
            unsettled = (resent or outcome.doubted) and reason is not None and http_status not in SETTLING
            if outcome.in_doubt or unsettled:
                # No answer says whether the target applied it: it stays in flight under its key (and batch).
                status, error, batch_key = "in_flight", self._in_doubt_reason(send.operation, reason), send.batch_key
            elif reason is None:
                status, error = "delivered", None
            elif send.operation == "delete" and http_status in (404, 410):
                status, error = "delivered", None  # already gone is what a delete wants
            elif mode == "update" and http_status == 404:
                status, error = "skipped", "sync_mode update: the record is not at the target"
            elif mode == "insert" and http_status == 409:
                status, error = "skipped", "sync_mode insert: the record is already at the target"
            else:
                status, error = "failed", reason
        failed_runs, retry_after = send.failed_runs, None
        if status == "failed" and http_status in REFUSING:
            # The target refused this version: one more failed run, then a wait or, at the limit, a dead letter.
            failed_runs += 1
            status, retry_after = self.retry.after_failure(failed_runs, self.clock())
            if status == DEAD_LETTER:
                error = f"{error}; dead letter after {failed_runs} failed run(s): no run sends it again"
        elif status in ("delivered", "skipped"):
            failed_runs = 0
        target_ref = entry.target_ref if entry else None
        if status == "delivered" and send.operation != "delete" and body and self.configuration.target_ref:
            # The target applied it: whatever stops its id being kept, the delivery stands (sending it again would
            # apply it twice); the record keeps its previous id and the reason is its note.
            found, note = read_target_ref(body, self.configuration.target_ref)
            note = note or target_ref_refusal(found)
            if note is None and found is not None:
                target_ref = found
            error = note
        delivered_fp = entry.delivered_fingerprint if entry else None
        if status == "delivered":
            delivered_fp = send.fingerprint  # None after a delete: the target no longer holds the record
        updates.append(
            RecordUpdate(
                record_key=send.key,
                status=status,
                operation=send.operation,
                fingerprint=send.fingerprint,
                delivered_fingerprint=delivered_fp,
                version=send.version,
                idempotency_key=send.idempotency_key,
                attempts=previous_attempts + requests,
                batch_key=batch_key,
                last_error=error,
                http_status=http_status,
                target_ref=target_ref,
                delivered_at=finished if status == "delivered" else None,
                failed_runs=failed_runs,
                retry_after=retry_after,
            )
        )
        in_doubt = status in ("in_flight", "pending")
        attempts.append(
            AttemptRow(
                record_key=send.key,
                operation=send.operation,
                outcome="in_doubt" if in_doubt else status,
                idempotency_key=send.idempotency_key,
                http_status=http_status,
                requests=requests,
                response_excerpt=body,
                error=error,
                target_ref=target_ref,
                started_at=started,
                finished_at=finished,
            )
        )
        report.counts["requests"] += requests
        report.counts[send.operation] += 1
        if in_doubt:
            report.counts["in_doubt"] += 1
            status = "failed"  # not delivered by this run; the ledger keeps it in doubt
        if status == DEAD_LETTER:  # failed in this run, and its last try: counted as both
            report.counts["failed"] += 1
            report.counts[DEAD_LETTER] += 1
            report.counts["new_dead_letter"] += 1
            self._remember(
                report,
                send.key,
                send.operation,
                status,
                http_status,
                error,
                send.idempotency_key,
                target_ref,
                failure=True,
            )
            return
        self._count(report, send.key, send.operation, status, http_status, error, send.idempotency_key, target_ref)

    def _in_doubt_reason(self, operation: str, reason: str | None) -> str:
        rule = self.recovery.get(operation)
        mode = rule.mode if rule is not None else "resend"
        then = {
            "resend": "the next run sends it again under the same Idempotency-Key",
            "probe": "the next run asks the target (the lookup request) before sending it again",
            "hold": "the next run holds it for review",
        }[mode]
        return f"outcome unknown ({reason or 'no answer'}): the target may have applied it; {then}"

    def _fail_locally(self, key, operation, entry, error, updates, attempts, report, now) -> None:
        """A record that failed before any request (mapping): failed alone, with its reason."""
        updates.append(self._local_update(key, operation, entry, "failed", entry.fingerprint if entry else None, error))
        attempts.append(AttemptRow(key, operation, "failed", None, None, 0, None, error, None, now, now))
        self._count(report, key, operation, "failed", None, error, None, entry.target_ref if entry else None)

    def _skip(self, key, operation, entry, fp, reason, updates, attempts, report, now) -> None:
        update = self._local_update(key, operation, entry, "skipped", fp, reason)
        update.failed_runs, update.retry_after = 0, None
        updates.append(update)
        attempts.append(AttemptRow(key, operation, "skipped", None, None, 0, None, reason, None, now, now))
        self._count(report, key, operation, "skipped", None, reason, None, entry.target_ref if entry else None)

    def _hold(self, key, operation, entry, updates, attempts, report, now, reason: str) -> None:
        """A record in doubt (it may have landed without an answer) held for review, under its old key and version."""
        rule = self.recovery.get(operation)
        if reason == HELD_IN_DOUBT and rule is not None and rule.mode == "hold" and self.spec.recovery == "auto":
            reason = f"{reason} (recovery: {rule.why})"
        update = self._local_update(key, operation, entry, "pending", entry.fingerprint, reason)
        update.idempotency_key = entry.idempotency_key
        update.version = entry.version
        update.retry_after = None  # held for a person, not for a time
        updates.append(update)
        attempts.append(
            AttemptRow(key, operation, "held", entry.idempotency_key, None, 0, None, reason, None, now, now)
        )
        report.counts["held"] += 1
        self._remember(report, key, operation, "held", None, reason, entry.idempotency_key, entry.target_ref)

    def _local_update(self, key, operation, entry: LedgerEntry | None, status, fp, error) -> RecordUpdate:
        return RecordUpdate(
            record_key=key,
            status=status,
            operation=operation,
            fingerprint=fp,
            delivered_fingerprint=entry.delivered_fingerprint if entry else None,
            version=entry.version if entry else 0,
            idempotency_key=entry.idempotency_key if entry else None,
            attempts=entry.attempts if entry else 0,
            last_error=error,
            target_ref=entry.target_ref if entry else None,
            # A record that fails before any request keeps its count and retry time: nothing reached the target.
            failed_runs=entry.failed_runs if entry else 0,
            retry_after=entry.retry_after if entry else None,
        )

    def _not_retried(self, report, key, operation, entry: LedgerEntry, action: str, reason: str) -> None:
        """A record the target refused before that this run does not send (its retry time has not come, or it is a
        dead letter): counted and shown, the ledger left as it is."""
        report.counts[action] += 1
        self._remember(report, key, operation, action, None, reason, entry.idempotency_key, entry.target_ref)

    def _count(self, report, key, operation, status, http_status, error, ikey, target_ref) -> None:
        report.counts[status] += 1
        self._remember(report, key, operation, status, http_status, error, ikey, target_ref)

    def _remember(
        self, report, key, operation, status, http_status, error, ikey, target_ref, failure: bool | None = None
    ) -> None:
        row = {
            "key": key,
            "operation": operation,
            "status": status,
            "http_status": http_status,
            "error": error,
            "idempotency_key": ikey,
            "target_ref": target_ref,
        }
        if len(report.rows) < SAMPLE_ROWS:
            report.rows.append(row)
        if (status == "failed" if failure is None else failure) and len(report.failures) < 20:
            report.failures.append(row)

    def _write_later(
        self, loop, updates: list[RecordUpdate], attempts: list[AttemptRow], settle: list[int] | None = None
    ) -> None:
        """Outcomes are committed on the worker thread, in order, while the next chunk is sent. The write-back
        follows the ledger commit: it copies what the ledger holds (an outbox, so a crash in between loses nothing)."""
        committed = loop.run_in_executor(self._worker, self._commit_outcomes, updates, attempts, settle or [])
        # A run of 10 million records makes 40,000 of these: keep only those still running or failed, so memory
        # stays flat while the end of the run still surfaces a failed write.
        self._pending_writes = [f for f in self._pending_writes if _unsettled(f)]
        self._pending_writes.append(committed)
        if self.write_back is not None and attempts:
            self._pending_writes.append(asyncio.ensure_future(self._write_back_after(loop, committed)))

    async def _write_back_after(self, loop, committed: asyncio.Future) -> None:
        await committed
        await loop.run_in_executor(self._write_back_worker, self.write_back.drain)

    def _commit_outcomes(self, updates: list[RecordUpdate], attempts: list[AttemptRow], settle: list[int]) -> None:
        self.ledger.write(self.name, self.configuration.name, self.run_id, updates, attempts, settle)
        if self.audit is not None and attempts:
            self.audit.append(self._outcome_rows(attempts), [a.requests for a in attempts])

    def _outcome_rows(self, attempts: list[AttemptRow]) -> list[dict]:
        """Outcomes as the audit file and the write-back table take them."""
        return [
            {
                "run_id": self.run_id,
                "connector": self.name,
                "configuration": self.configuration.name,
                "record_key": a.record_key,
                "operation": a.operation,
                "status": a.outcome,
                "http_status": a.http_status,
                "error": a.error,
                "target_ref": a.target_ref,
                "idempotency_key": a.idempotency_key,
                "finished_at": a.finished_at,
            }
            for a in attempts
        ]


def _whole_batches(sends: list[_Send], size: int) -> Iterator[list[_Send]]:
    """`sends` in chunks of about `size`, the records of one batch (one batch key) always in the same chunk."""
    by_batch: dict[str | None, list[_Send]] = {}
    for send in sends:
        by_batch.setdefault(send.batch_key, []).append(send)
    chunk: list[_Send] = []
    for group in by_batch.values():
        if chunk and len(chunk) + len(group) > size:
            yield chunk
            chunk = []
        chunk += group
    if chunk:
        yield chunk


def _in_flight(send: _Send) -> RecordUpdate:
    entry = send.entry
    return RecordUpdate(
        record_key=send.key,
        status="in_flight",
        operation=send.operation,
        fingerprint=send.fingerprint,
        delivered_fingerprint=entry.delivered_fingerprint if entry else None,
        version=send.version,
        idempotency_key=send.idempotency_key,
        attempts=entry.attempts if entry else 0,
        batch_key=send.batch_key,
        target_ref=entry.target_ref if entry else None,
        failed_runs=send.failed_runs,
    )


def planned_row(key: str, decision: Any) -> dict:
    """One record's line in `plan --output`: its Decision, and the request once the plan has built it."""
    return {
        "record_key": key,
        "action": decision.action,
        "operation": decision.operation,
        "reason": decision.reason,
        "method": None,
        "path": None,
        "body": None,
    }


def _describe_request(key: str, operation: str, record: Mapping | None, request: HttpRequest) -> dict:
    return {
        "key": key,
        "operation": operation,
        "method": request.method,
        "path": request.path,
        "body": request.body.decode() if request.body else None,
        "fields": dict(record) if record is not None else None,
    }


def _unsettled(future: asyncio.Future) -> bool:
    """Still running, or ended in an error the end of the run must raise."""
    return not future.done() or future.cancelled() or future.exception() is not None
