"""The hosted SFTP exchange end to end: `serve-files` as a subprocess, OpenSSH's `sftp` (and paramiko where a test
must hold an upload open or ask the server for what OpenSSH's client refuses by itself) as the partners' clients."""

from __future__ import annotations

import base64
import os
import stat
import time

import paramiko
import pytest

from connector_pipelines_tests.partners.exchange import partner_entry
from connector_pipelines_tests.servers import LOOPBACK

pytestmark = pytest.mark.timeout(120)


def paramiko_client(exchange, partner: str, password: str) -> tuple[paramiko.Transport, paramiko.SFTPClient]:
    """A paramiko SFTP session that checks the host key against the one serve-files printed."""
    transport = paramiko.Transport((LOOPBACK, exchange.port))
    kind, data = exchange.host_key.split()
    expected = paramiko.PKey.from_type_string(kind, base64.b64decode(data))
    transport.connect(hostkey=expected, username=partner, password=password)
    return transport, paramiko.SFTPClient.from_transport(transport)


def test_a_partner_pushes_into_its_inbox_and_pulls_from_its_outbox_with_its_key(exchanges):
    exchange = exchanges([partner_entry("acme")])
    key = exchange.add_key("acme")
    exchange.start()
    (exchange.folder("acme", "outbox") / "prices.csv").write_text("sku,price\nA,1\n")
    (exchange.root / "orders.csv").write_text("id\n1\n")

    done = exchange.sftp("acme", ["put orders.csv inbox/orders.csv", "get outbox/prices.csv got.csv"], key=key)

    assert done.returncode == 0, done.stderr
    assert (exchange.folder("acme", "inbox") / "orders.csv").read_text() == "id\n1\n"
    assert (exchange.root / "got.csv").read_text() == "sku,price\nA,1\n"


def test_a_partner_logs_in_with_its_password_and_a_wrong_one_is_refused(exchanges):
    exchange = exchanges([partner_entry("acme")])
    password = exchange.add_password("acme")
    exchange.start()

    right = exchange.sftp("acme", ["ls inbox"], password=password)
    wrong = exchange.sftp("acme", ["ls inbox"], password=password + "x")

    assert right.returncode == 0, right.stderr
    assert wrong.returncode != 0
    assert "Permission denied" in wrong.stderr
    log = exchange.log()
    assert "login refused: partner 'acme' from 127.0.0.1: wrong password" in log
    assert password not in log and password + "x" not in log


def test_the_host_key_stays_the_same_across_restarts(exchanges):
    exchange = exchanges([partner_entry("acme")])
    key = exchange.add_key("acme")
    exchange.start()
    first_key, first_fingerprint = exchange.host_key, exchange.fingerprint
    exchange.stop()
    exchange.start()

    assert (exchange.host_key, exchange.fingerprint) == (first_key, first_fingerprint)
    assert first_fingerprint.startswith("SHA256:")
    key_file = exchange.storage / "partners" / ".server" / "ssh_host_ed25519_key"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    done = exchange.sftp("acme", ["ls"], key=key)  # StrictHostKeyChecking=yes against the key printed
    assert done.returncode == 0, done.stderr


def test_paths_outside_the_partners_folders_are_refused(exchanges):
    exchange = exchanges([partner_entry("acme"), partner_entry("globex")])
    key = exchange.add_key("acme")
    exchange.add_key("globex")
    exchange.start()
    (exchange.folder("globex", "outbox") / "secret.csv").write_text("globex only\n")
    outside = exchange.root / "outside.txt"
    outside.write_text("the server's own file\n")
    os.symlink(outside, exchange.folder("acme", "outbox") / "link.txt")
    (exchange.root / "up.csv").write_text("x\n")

    done = exchange.sftp(
        "acme",
        [
            "-get ../globex/outbox/secret.csv s1",
            "-get /globex/outbox/secret.csv s2",
            "-get ../../outside.txt s3",
            f"-get {outside} s4",
            "-get outbox/link.txt s5",
            "-put up.csv ../escape.csv",
            "-put up.csv /escape.csv",
            "-put up.csv outbox/up.csv",
            "-symlink /etc/passwd inbox/passwd",
            "-mkdir inbox/sub",
            "ls",
        ],
        key=key,
    )

    assert done.returncode == 0, done.stderr
    assert not any((exchange.root / name).exists() for name in ("s1", "s2", "s3", "s4", "s5"))
    assert sorted(p.name for p in exchange.folder("acme", "inbox").iterdir()) == []
    assert not (exchange.folder("acme", "outbox") / "up.csv").exists()
    assert not list(exchange.storage.rglob("escape.csv"))
    assert outside.read_text() == "the server's own file\n"
    log = exchange.log()
    assert "creating a symbolic link refused" in log
    assert "'..' is not allowed" in log


def test_the_server_refuses_a_symlink_even_when_asked_directly(exchanges):
    """OpenSSH's client already declines to download a symlink it listed; paramiko asks the server anyway."""
    exchange = exchanges([partner_entry("acme")])
    password = exchange.add_password("acme")
    exchange.start()
    outside = exchange.root / "outside.txt"
    outside.write_text("the server's own file\n")
    os.symlink(outside, exchange.folder("acme", "outbox") / "link.txt")
    transport, client = paramiko_client(exchange, "acme", password)
    try:
        with pytest.raises(PermissionError):
            client.open("outbox/link.txt").read()
        with pytest.raises(PermissionError):
            client.symlink("/etc/passwd", "inbox/passwd")
        assert client.listdir("outbox") == []  # not shown either
    finally:
        transport.close()


def test_an_upload_is_invisible_under_its_name_until_it_is_closed_complete(exchanges):
    exchange = exchanges([partner_entry("acme")])
    password = exchange.add_password("acme")
    exchange.start()
    inbox = exchange.folder("acme", "inbox")
    transport, client = paramiko_client(exchange, "acme", password)
    try:
        upload = client.open("inbox/big.csv", "wb")
        upload.write(b"id\n" + b"1\n" * 50_000)
        upload.flush()
        assert "big.csv" not in client.listdir("inbox")
        assert not (inbox / "big.csv").exists()
        upload.close()
        assert client.listdir("inbox") == ["big.csv"]
        assert (inbox / "big.csv").stat().st_size == 3 + 100_000

        # A connection that ends with the file still open leaves nothing behind.
        cut = client.open("inbox/cut.csv", "wb")
        cut.write(b"id\n1\n")
        cut.flush()
    finally:
        transport.close()
    uploads = exchange.storage / "partners" / "acme" / ".uploads"
    deadline = time.monotonic() + 10  # the server sees the connection end a moment later
    while list(uploads.iterdir()) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert sorted(p.name for p in inbox.iterdir()) == ["big.csv"]
    assert list(uploads.iterdir()) == []
    assert "upload discarded" in exchange.log()


def test_uploads_past_the_quota_are_refused(exchanges):
    exchange = exchanges([partner_entry("acme", quota={"max_files": 2, "max_bytes": 10_000})])
    key = exchange.add_key("acme")
    exchange.start()
    for name, size in (("a.csv", 100), ("b.csv", 100), ("c.csv", 100), ("huge.csv", 20_000)):
        (exchange.root / name).write_bytes(b"x" * size)

    first = exchange.sftp("acme", ["put a.csv inbox/a.csv", "put b.csv inbox/b.csv"], key=key)
    third = exchange.sftp("acme", ["put c.csv inbox/c.csv"], key=key)
    (exchange.folder("acme", "inbox") / "b.csv").unlink()  # an import took it: room for one more, but not 20 kB
    huge = exchange.sftp("acme", ["put huge.csv inbox/huge.csv"], key=key)

    assert first.returncode == 0, first.stderr
    assert third.returncode != 0
    assert huge.returncode != 0
    assert sorted(p.name for p in exchange.folder("acme", "inbox").iterdir()) == ["a.csv"]
    assert "quota exceeded: your inbox may hold at most 2 files" in exchange.log()
    assert "quota exceeded: your inbox may hold at most 10,000 bytes" in exchange.log()


def test_failed_logins_are_locked_out_and_the_log_holds_no_password(exchanges):
    exchange = exchanges([partner_entry("acme")])
    password = exchange.add_password("acme")
    exchange.start("--lockout-after", "2", "--lockout-seconds", "60")

    guesses = [exchange.sftp("acme", ["ls"], password=f"guess-{n}") for n in range(2)]
    right_but_locked = exchange.sftp("acme", ["ls"], password=password)

    assert all(guess.returncode != 0 for guess in guesses)
    assert right_but_locked.returncode != 0
    log = exchange.log()
    assert "(2 failed in a row; locked out for 60s)" in log
    assert "locked out after repeated failed logins" in log
    for secret in (password, "guess-0", "guess-1"):
        assert secret not in log


def test_logins_from_outside_the_allowed_networks_are_refused(exchanges):
    exchange = exchanges([partner_entry("acme", allowed_networks=["192.0.2.0/24"])])
    key = exchange.add_key("acme")
    exchange.start()

    done = exchange.sftp("acme", ["ls"], key=key)

    assert done.returncode != 0
    assert "the address is not in the partner's allowed_networks" in exchange.log()


def test_rotate_ends_the_old_password_and_disable_refuses_every_login(exchanges):
    exchange = exchanges([partner_entry("acme")])
    old = exchange.add_password("acme")
    exchange.start()
    rotated = exchange.cli("partners", "rotate", "acme")
    new = rotated.stdout.strip().splitlines()[-1]

    assert rotated.returncode == 0
    assert exchange.sftp("acme", ["ls"], password=old).returncode != 0
    assert exchange.sftp("acme", ["ls"], password=new).returncode == 0
    assert exchange.cli("partners", "disable", "acme").returncode == 0
    assert exchange.sftp("acme", ["ls"], password=new).returncode != 0
    listing = exchange.cli("partners", "list")
    assert listing.returncode == 0
    line = next(row for row in listing.stdout.splitlines() if row.startswith("acme"))
    assert line.split()[:3] == ["acme", "sftp", "no"]
    assert "scrypt" not in listing.stdout and new not in listing.stdout
