"""The email receiver's routes: one per enabled import with an `email:` source, into that import's inbox folder."""

from __future__ import annotations

from connector_pipelines.imports.email_inbox import InboxRoute
from connector_pipelines.imports.files import FilePattern
from connector_pipelines.spec.loader import Project
from connector_pipelines.storage import Storage


def inbox_routes(project: Project) -> list[InboxRoute]:
    routes = []
    for loaded in project.connectors.values():
        if loaded.kind != "import" or not loaded.spec.enabled:
            continue
        email = loaded.spec.import_.source.email
        if email is None:
            continue
        routes.append(
            InboxRoute(
                address=email.address,
                folder=Storage.for_project(project.base_dir).import_inbox_dir(loaded.name),
                allowed_senders=tuple(email.allowed_senders),
                pattern=FilePattern(email.pattern).matches,
            )
        )
    return routes
