"""After an import of a partner's files (a `partner` connection): each file's processing report into the partner's
outbox, and all of them in one email to its `return_email` through partners.yaml's `email_connection` (when both
are set). A report that cannot be written or sent is logged: the import itself has succeeded by then."""

from collections.abc import Mapping, Sequence

import dagster as dg

from connector_pipelines.errors import TransportError
from connector_pipelines.imports.run import ImportReport
from connector_pipelines.partners.reports import OUTBOX, email_subject, report_file_name, report_text
from connector_pipelines.spec.connections import Connection
from connector_pipelines.spec.imports import ImportConnector
from connector_pipelines.transports.resources import PartnerResource


def partner_report_keys(connector: ImportConnector, connections: Mapping[str, Connection]) -> frozenset[str]:
    """The smtp connection the import's reports are emailed through (none when they go to the outbox only)."""
    files = connector.import_.source.files
    connection = connections.get(files.connection) if files is not None else None
    if connection is None or connection.type != "partner":
        return frozenset()
    if connection.return_email and connection.email_connection:
        return frozenset({connection.email_connection})
    return frozenset()


def send_partner_reports(
    context: dg.AssetExecutionContext, connector: ImportConnector, reports: Sequence[ImportReport], run_id: str
) -> None:
    files = connector.import_.source.files
    if files is None:
        return
    partner = getattr(context.resources, files.connection)
    handled = [report for report in reports if report.file is not None]
    if not isinstance(partner, PartnerResource) or not handled:
        return
    texts = [report_text(connector.name, run_id, report) for report in handled]
    client = partner.get_client()
    try:
        for report, text in zip(handled, texts, strict=True):
            client.write_text(OUTBOX, report_file_name(report.file.name, run_id), text)
        context.log.info(
            f"processing report(s) of {len(handled)} file(s) written to partner '{partner.partner}''s outbox"
        )
    except TransportError as exc:
        context.log.error(f"the processing reports could not be written to partner '{partner.partner}''s outbox: {exc}")
    if not (partner.return_email and partner.email_connection):
        return
    try:
        smtp = getattr(context.resources, partner.email_connection).get_client()
        smtp.send_text(email_subject(connector.name, handled), "\n\n".join(texts), [partner.return_email])
        context.log.info(f"processing report emailed to {partner.return_email}")
    except TransportError as exc:
        context.log.error(f"the processing report could not be emailed to {partner.return_email}: {exc}")
