"""`resources/partners.yaml`: the partners who push files to our file exchange and pull files from it. Optional;
validated like every spec. Without it there are no partners and `serve-files` has nobody to let in.

```yaml
email_connection: smtp_relay          # an smtp connection of connections.yaml for processing reports (optional)
partners:
  - name: acme
    methods: [sftp, ftps]
    return_email: data-team@acme.example      # where processing reports go (optional)
    allowed_networks: [203.0.113.0/24, 2001:db8::/32]
    quota: {max_bytes: 1073741824, max_files: 500}
```

Credentials are not here: `connector-pipelines partners add NAME` makes them and keeps only a slow hash in the
state database.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator

from connector_pipelines.errors import ConnectorConfigError
from connector_pipelines.spec.common import NAME_PATTERN, StrictModel, quoted
from connector_pipelines.spec.connections import Connection
from connector_pipelines.spec.imports import EMAIL_ADDRESS
from connector_pipelines.spec.problems import did_you_mean, validate
from connector_pipelines.spec.yaml_source import YamlDocument, display_path, read_yaml

METHODS = ("sftp", "ftps")


class PartnerQuota(StrictModel):
    """What a partner's uploads waiting in its inbox may hold at once (files taken by an import no longer count)."""

    max_bytes: int = Field(1 << 30, ge=1, description="Bytes in the inbox at once, uploads in progress included")
    max_files: int = Field(1000, ge=1, description="Files in the inbox at once, uploads in progress included")


class PartnerSpec(StrictModel):
    name: str = Field(pattern=NAME_PATTERN, description="Also the login name and the folder name")
    methods: list[Literal["sftp", "ftps"]] = Field(min_length=1, description="How the partner may connect")
    return_email: str | None = Field(None, description="Where the reports of processed files go")
    allowed_networks: list[str] = Field(
        min_length=1, description="CIDRs logins may come from (0.0.0.0/0 and ::/0 for anywhere); others are refused"
    )
    quota: PartnerQuota = PartnerQuota()
    enabled: bool = True

    @field_validator("return_email")
    @classmethod
    def _address(cls, value: str | None) -> str | None:
        if value is not None and not EMAIL_ADDRESS.match(value):
            raise ValueError(f"{quoted(value)} is not an email address")
        return value

    @field_validator("allowed_networks")
    @classmethod
    def _networks(cls, values: list[str]) -> list[str]:
        for value in values:
            try:
                ipaddress.ip_network(value, strict=True)
            except ValueError:
                raise ValueError(
                    f"{quoted(value)} is not a network; write a CIDR such as 203.0.113.0/24 or 2001:db8::/32 "
                    "(host bits zero; a single address is 203.0.113.7/32)"
                ) from None
        return values

    @field_validator("methods")
    @classmethod
    def _once_each(cls, values: list[str]) -> list[str]:
        if len(set(values)) != len(values):
            raise ValueError("a method is listed twice; list each of sftp, ftps once")
        return values

    def allows_address(self, address: str) -> bool:
        """Whether a login from `address` may be tried (an IPv4-mapped IPv6 address counts as its IPv4 one)."""
        try:
            parsed = ipaddress.ip_address(address.split("%", 1)[0])
        except ValueError:
            return False
        if isinstance(parsed, ipaddress.IPv6Address) and parsed.ipv4_mapped is not None:
            parsed = parsed.ipv4_mapped
        return any(parsed in ipaddress.ip_network(network) for network in self.allowed_networks)


class PartnersFile(StrictModel):
    email_connection: str | None = Field(None, description="An smtp connection for processing reports")
    partners: list[PartnerSpec] = Field(default_factory=list)

    def partner(self, name: str) -> PartnerSpec | None:
        return next((partner for partner in self.partners if partner.name == name), None)

    @property
    def names(self) -> list[str]:
        return [partner.name for partner in self.partners]


def load_partners(path: Path, connections: dict[str, Connection], connections_path: Path) -> PartnersFile | None:
    """partners.yaml (None when there is none), with its references checked both ways: its email connection is an
    smtp connection, partner names are unique, and every `type: partner` connection names one of its partners.

    Each `partner` connection of `connections` is replaced by a copy carrying its partner's `return_email` and the
    file's `email_connection`, so the runs that use it know where its processing reports go."""
    parsed: PartnersFile | None = None
    problems: list[str] = []
    if path.exists():
        doc = read_yaml(path)
        if doc.data is not None:
            parsed = validate(doc, PartnersFile, doc.data)
            problems += _partner_file_problems(parsed, doc, connections)
    problems += _connection_problems(parsed, connections, connections_path, path)
    if problems:
        raise ConnectorConfigError(problems)
    for name, connection in list(connections.items()):
        partner = parsed.partner(connection.partner) if parsed and connection.type == "partner" else None
        if partner is not None:
            email = {"return_email": partner.return_email, "email_connection": parsed.email_connection}
            connections[name] = connection.model_copy(update=email)
    return parsed


def _partner_file_problems(parsed: PartnersFile, doc: YamlDocument, connections: Mapping[str, Connection]) -> list[str]:
    where, problems = display_path(doc.path), []
    seen: set[str] = set()
    for index, partner in enumerate(parsed.partners):
        if partner.name in seen:
            problems.append(
                f"{where}:{doc.line_of(('partners', index, 'name'))} partners.{index}.name: '{partner.name}' is listed "
                "twice; partner names are login names and folder names, so they must be unique: keep one"
            )
        seen.add(partner.name)
    name = parsed.email_connection
    if name is not None and (name not in connections or connections[name].type != "smtp"):
        smtp = ", ".join(sorted(n for n, c in connections.items() if c.type == "smtp")) or "none"
        problems.append(
            f"{where}:{doc.line_of(('email_connection',))} email_connection: '{name}' is not an smtp connection of "
            f"connections.yaml{did_you_mean(name, connections)}; smtp connections: {smtp}"
        )
    return problems


def _connection_problems(
    parsed: PartnersFile | None, connections: Mapping[str, Connection], connections_path: Path, partners_path: Path
) -> list[str]:
    wanted = {name: c.partner for name, c in connections.items() if c.type == "partner"}
    if not wanted:
        return []
    known = parsed.names if parsed is not None else []
    doc = read_yaml(connections_path)
    where, problems = display_path(connections_path), []
    for name, partner in wanted.items():
        if partner in known:
            continue
        line = doc.line_of(("connections", name, "partner"))
        fix = (
            f"partners in {display_path(partners_path)}: {', '.join(known) or 'none'}"
            if parsed is not None
            else f"create {display_path(partners_path)} with `partners: [{{name: {partner}, methods: [sftp], "
            "allowed_networks: [...]}]`"
        )
        problems.append(
            f"{where}:{line} connections.{name}.partner: no partner named '{partner}'{did_you_mean(partner, known)}; "
            f"{fix}"
        )
    return problems
