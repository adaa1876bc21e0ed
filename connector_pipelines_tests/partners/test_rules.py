"""The exchange's pure rules and its state, without a server: partner paths, the failed-login lockout, quotas,
password hashes and the credentials table, partners.yaml's validation."""

from __future__ import annotations

import asyncssh
import pytest

from connector_pipelines.errors import ConnectorConfigError
from connector_pipelines.partners.layout import Usage
from connector_pipelines.partners.limits import LoginThrottle, ThrottlePolicy, lockout_seconds, quota_problem
from connector_pipelines.partners.paths import PartnerPath, PathRefused, parse_path
from connector_pipelines.spec.loader import load_project
from connector_pipelines.spec.partners import PartnerQuota, PartnerSpec
from connector_pipelines.state.partner_credentials import PartnerCredentials, hash_password, password_matches


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("/", PartnerPath()),
        (".", PartnerPath()),
        ("inbox", PartnerPath("inbox")),
        ("/outbox/", PartnerPath("outbox")),
        ("inbox/orders.csv", PartnerPath("inbox", "orders.csv")),
        (b"//inbox/./orders.csv", PartnerPath("inbox", "orders.csv")),
    ],
)
def test_paths_inside_the_two_folders_are_parsed(raw, expected):
    assert parse_path(raw) == expected


@pytest.mark.parametrize(
    "raw", ["../x", "/inbox/../outbox/x", "..", "/etc/passwd", "archive/x.csv", "inbox/sub/x.csv", "inbox/a\\b", "\x00"]
)
def test_paths_outside_the_two_folders_are_refused(raw):
    with pytest.raises(PathRefused):
        parse_path(raw)


def test_the_lockout_starts_after_the_free_failures_and_doubles_up_to_the_cap():
    policy = ThrottlePolicy(free_failures=3, base_seconds=10, max_seconds=60)
    assert [lockout_seconds(n, policy) for n in range(1, 8)] == [0, 0, 10, 20, 40, 60, 60]


def test_a_throttle_locks_a_partner_and_an_address_and_forgets_after_the_window():
    now = [1000.0]
    throttle = LoginThrottle(ThrottlePolicy(free_failures=2, base_seconds=5, window_seconds=100), lambda: now[0])
    throttle.failed("partner:acme", "address:192.0.2.1")
    assert throttle.locked_for("partner:acme") == 0
    throttle.failed("partner:acme", "address:192.0.2.1")
    assert throttle.locked_for("partner:acme") == 5 and throttle.locked_for("address:192.0.2.1") == 5
    assert throttle.locked_for("partner:globex", "address:198.51.100.9") == 0
    now[0] += 5
    assert throttle.locked_for("partner:acme") == 0
    throttle.failed("partner:acme")
    assert throttle.locked_for("partner:acme") == 10
    throttle.succeeded("partner:acme")
    assert throttle.locked_for("partner:acme") == 0
    now[0] += 200
    assert throttle.locked_for("address:192.0.2.1") == 0


def test_quota_problems_name_the_limit_passed():
    quota = PartnerQuota(max_files=2, max_bytes=100)
    assert quota_problem(Usage(2, 100), quota) is None
    assert quota_problem(Usage(3, 10), quota) == "quota exceeded: your inbox may hold at most 2 files"
    assert quota_problem(Usage(1, 101), quota) == "quota exceeded: your inbox may hold at most 100 bytes"


def test_a_password_hash_is_salted_scrypt_and_checks_only_its_password():
    first, second = hash_password("s3cret"), hash_password("s3cret")
    scheme, n, r, p, _salt, _digest = first.split("$")
    assert (scheme, int(n), int(r), int(p)) == ("scrypt", 2**15, 8, 1)
    assert first != second  # a salt per hash
    assert "s3cret" not in first
    assert password_matches("s3cret", first) and password_matches("s3cret", second)
    assert not password_matches("s3cret ", first) and not password_matches("s3cret", None)


def public_key() -> str:
    key = asyncssh.generate_private_key("ssh-ed25519")
    return " ".join(key.export_public_key("openssh").decode().split()[:2])


def test_credentials_add_rotate_disable_and_keys(tmp_path):
    key, other = public_key(), public_key()
    credentials = PartnerCredentials(f"sqlite:///{tmp_path / 'state.db'}")
    try:
        password = credentials.add("acme")
        assert len(password) >= 32 and credentials.check_password("acme", password)
        with pytest.raises(ValueError, match="already has credentials"):
            credentials.add("acme")
        rotated = credentials.rotate("acme")
        assert not credentials.check_password("acme", password) and credentials.check_password("acme", rotated)
        credentials.add_key("acme", f"{key} acme@laptop")
        assert credentials.check_key("acme", key)
        assert not credentials.check_key("acme", other)
        credentials.disable("acme")
        assert not credentials.check_password("acme", rotated)
        assert not credentials.check_key("acme", key)
        [login] = credentials.logins()
        assert (login.partner, login.has_password, login.enabled) == ("acme", True, False)
        assert rotated not in repr(login)
    finally:
        credentials.dispose()


def test_a_partner_allows_addresses_of_its_networks_only():
    partner = PartnerSpec(name="acme", methods=["sftp"], allowed_networks=["192.0.2.0/24", "2001:db8::/32"])
    assert partner.allows_address("192.0.2.7") and partner.allows_address("::ffff:192.0.2.7")
    assert partner.allows_address("2001:db8::1")
    assert not partner.allows_address("198.51.100.1") and not partner.allows_address("not an address")


def write_project(tmp_path, partners_yaml: str, connections: str = "connections: {}\n"):
    resources = tmp_path / "resources"
    (resources / "connectors").mkdir(parents=True)
    (resources / "connections.yaml").write_text(connections)
    (resources / "partners.yaml").write_text(partners_yaml)
    return resources


def test_partners_yaml_problems_name_the_file_the_line_and_the_fix(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    resources = write_project(
        tmp_path,
        "email_connection: relay\n"
        "partners:\n"
        "  - name: acme\n"
        "    methods: [sftp]\n"
        "    allowed_networks: [10.0.0.1/8]\n"
        "  - name: acme\n"
        "    methods: [sftp]\n"
        "    allowed_networks: [10.0.0.0/8]\n",
    )

    with pytest.raises(ConnectorConfigError) as raised:
        load_project(resources)

    assert raised.value.problems == [
        "resources/partners.yaml:5 partners.0.allowed_networks: '10.0.0.1/8' is not a network; write a CIDR such as "
        "203.0.113.0/24 or 2001:db8::/32 (host bits zero; a single address is 203.0.113.7/32)"
    ]
    (resources / "partners.yaml").write_text(
        (resources / "partners.yaml").read_text().replace("10.0.0.1/8", "10.0.0.0/8")
    )
    with pytest.raises(ConnectorConfigError) as raised:
        load_project(resources)
    assert raised.value.problems == [
        "resources/partners.yaml:6 partners.1.name: 'acme' is listed twice; partner names are login names and folder "
        "names, so they must be unique: keep one",
        "resources/partners.yaml:1 email_connection: 'relay' is not an smtp connection of connections.yaml; smtp "
        "connections: none",
    ]


def test_without_partners_yaml_nothing_changes_and_a_partner_connection_says_how_to_add_one(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    resources = tmp_path / "resources"
    (resources / "connectors").mkdir(parents=True)
    (resources / "connections.yaml").write_text("connections: {}\n")
    assert load_project(resources).partners is None

    (resources / "connections.yaml").write_text("connections:\n  drop:\n    type: partner\n    partner: acme\n")
    with pytest.raises(ConnectorConfigError) as raised:
        load_project(resources)
    [problem] = raised.value.problems
    assert problem.startswith("resources/connections.yaml:4 connections.drop.partner: no partner named 'acme'; create")


def test_an_extract_to_a_partner_must_write_into_its_outbox(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    resources = write_project(
        tmp_path,
        "partners:\n  - {name: acme, methods: [sftp], allowed_networks: [10.0.0.0/8]}\n",
        "connections:\n  db: {type: sql, url: 'sqlite:///x.db'}\n  acme_exchange: {type: partner, partner: acme}\n",
    )
    (resources / "connectors" / "prices.yaml").write_text(
        "kind: extract\n"
        "extract:\n"
        "  source: {connection: db, query: SELECT 1 AS x}\n"
        "  format: csv\n"
        "  destinations:\n"
        "    - {connection: acme_exchange, folder: exports}\n"
    )

    with pytest.raises(ConnectorConfigError) as raised:
        load_project(resources)

    assert raised.value.problems == [
        "resources/connectors/prices.yaml:6 extract.destinations.0.folder: a partner sees its outbox only (and its "
        "inbox, for its uploads); set `folder: outbox`"
    ]


def test_an_import_from_a_partner_must_read_its_inbox(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    resources = write_project(
        tmp_path,
        "partners:\n  - {name: acme, methods: [sftp], allowed_networks: [10.0.0.0/8]}\n",
        "connections:\n  db: {type: sql, url: 'sqlite:///x.db'}\n  acme_exchange: {type: partner, partner: acme}\n",
    )
    (resources / "connectors" / "orders.yaml").write_text(
        "kind: import\n"
        "import:\n"
        "  source:\n"
        "    files: {connection: acme_exchange, folder: outbox, pattern: '*.csv'}\n"
        "  target: {connection: db, table: orders, key: id}\n"
        "  mapping:\n"
        "    - {target: id, source: id}\n"
    )

    with pytest.raises(ConnectorConfigError) as raised:
        load_project(resources)

    assert raised.value.problems == [
        "resources/connectors/orders.yaml:4 import.source.files.folder: a partner uploads into its inbox only; "
        "set `folder: inbox`"
    ]
