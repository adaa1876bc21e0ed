"""A `partner` connection: a partner's folders on our own file exchange (`serve-files`), read and written as a
folder on this machine. Its root is `<storage>/partners/<name>/`: an import reads `inbox` (what the partner
uploaded), an extract writes into `outbox` (what the partner downloads). The exchange only ever shows a partner
those two folders, so an import's `archive` and `quarantine` beside them stay the platform's."""

from __future__ import annotations

from pathlib import Path

from connector_pipelines.partners.layout import PartnerFolders
from connector_pipelines.transports.folder import FolderClient


def partner_client(
    partner: str, storage_root: str, return_email: str | None = None, email_connection: str | None = None
) -> FolderClient:
    """The folder client of the partner's root; the folders are made when missing (they are ours, in the storage
    folder, not a share that could be unmounted). `return_email` and `email_connection` are the connection's
    settings for processing reports (`partners/reports.py`), which a folder client has no use for."""
    folders = PartnerFolders.of(Path(storage_root), partner).ensure()
    return FolderClient(folders.root)
