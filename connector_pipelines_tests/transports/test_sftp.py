"""SftpClient against a real SSH server (asyncssh): atomic uploads, host key checks, password and key auth."""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

import asyncssh
import paramiko
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from connector_pipelines.errors import TransportError
from connector_pipelines.spec.extract import FileDestination
from connector_pipelines.transports.sftp import SftpClient, load_private_key, parse_host_key
from connector_pipelines_tests.servers.sftp import SftpTestServer, public_key_line

pytestmark = pytest.mark.timeout(60)


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def destination(folder: str = "") -> FileDestination:
    return FileDestination(connection="partner_sftp", folder=folder)


@pytest.fixture
def client(sftp_server):
    sftp = SftpClient(**sftp_server.client_kwargs())
    yield sftp
    sftp.close()


@pytest.mark.parametrize("size", [2_000, 5 * 1024 * 1024])
def test_upload_lands_complete_in_a_created_folder(sftp_server, client, make_file, unique_folder, size):
    local = make_file("orders.csv", size)

    receipt = client.upload(local, "orders.csv", destination(f"{unique_folder}/daily"))

    landed = sftp_server.root / unique_folder / "daily" / "orders.csv"
    assert sha256(landed.read_bytes()) == sha256(local.read_bytes())
    assert receipt.uri == f"sftp://127.0.0.1:{sftp_server.port}/{unique_folder}/daily/orders.csv"
    assert [p.name for p in landed.parent.iterdir()] == ["orders.csv"]
    # It was written under a temporary name first.
    temporaries = [p for p in sftp_server.opened_for_write if p.startswith(f"{unique_folder}/daily/.orders.csv.")]
    assert len(temporaries) == 1 and temporaries[0].endswith(".part")


def test_upload_replaces_an_existing_file_and_reuses_the_connection(sftp_server, client, make_file, unique_folder):
    client.upload(make_file("a.csv", 100), "a.csv", destination(unique_folder))
    newer = make_file("a.csv", 300)

    client.upload(newer, "a.csv", destination(unique_folder))

    assert (sftp_server.root / unique_folder / "a.csv").read_bytes() == newer.read_bytes()


def test_a_server_without_posix_rename_still_gets_the_file_replaced(sftp_server, client, make_file):
    # In `legacy_folder` the server refuses posix-rename and plain rename refuses an existing target.
    folder = sftp_server.root / sftp_server.legacy_folder
    client.upload(make_file("l.csv", 100), "l.csv", destination(sftp_server.legacy_folder))
    newer = make_file("l.csv", 200)

    client.upload(newer, "l.csv", destination(sftp_server.legacy_folder))

    assert (folder / "l.csv").read_bytes() == newer.read_bytes()
    assert [p.name for p in folder.iterdir()] == ["l.csv"]
    (folder / "l.csv").unlink()


def test_upload_into_the_login_folder(sftp_server, client, make_file, unique_folder):
    receipt = client.upload(make_file("top.csv", 10), f"{unique_folder}.csv", destination())
    assert (sftp_server.root / f"{unique_folder}.csv").exists()
    assert receipt.uri == f"sftp://127.0.0.1:{sftp_server.port}/{unique_folder}.csv"


@pytest.mark.parametrize("name", ["../x.csv", "a/b.csv", ".hidden", "a\\b.csv"])
def test_bad_remote_names_are_refused_before_connecting(make_file, name):
    # Port 9 (discard) is never contacted: the name is checked first.
    unreachable = SftpClient(host="127.0.0.1", port=9, username="u", password="p", host_key="ssh-ed25519 AAAA")
    with pytest.raises(TransportError, match="not a plain file name"):
        unreachable.upload(make_file("x.csv", 10), name, destination())


def test_a_failed_upload_leaves_no_file_and_no_temporary_file(sftp_server, client, make_file):
    # The server refuses writes past its quota in `full_folder`, like a full disk, half-way through the file.
    before = len(sftp_server.opened_for_write)
    local = make_file("big.csv", sftp_server.quota_bytes * 4)

    with pytest.raises(TransportError, match=r"sftp 127\.0\.0\.1:\d+: upload of 'full/big.csv' failed"):
        client.upload(local, "big.csv", destination(sftp_server.full_folder))

    assert list((sftp_server.root / sftp_server.full_folder).iterdir()) == []
    opened = sftp_server.opened_for_write[before:]
    assert len(opened) == 1 and opened[0].startswith("full/.big.csv.")  # the temporary file existed, then went
    # The connection is still usable afterwards.
    client.upload(make_file("small.csv", 10), "small.csv", destination(sftp_server.full_folder))
    assert (sftp_server.root / sftp_server.full_folder / "small.csv").exists()
    (sftp_server.root / sftp_server.full_folder / "small.csv").unlink()


def test_a_stopped_server_gives_a_transport_error(make_file):
    with SftpTestServer() as server:
        kwargs = server.client_kwargs()
    with pytest.raises(TransportError, match=r"sftp 127\.0\.0\.1:\d+: cannot connect: Connection refused"):
        SftpClient(**kwargs).upload(make_file("x.csv", 10), "x.csv", destination())


def test_a_different_host_key_is_refused_and_both_fingerprints_are_shown(sftp_server, make_file, unique_folder):
    other_line = public_key_line(asyncssh.generate_private_key("ssh-ed25519"))
    client = SftpClient(**sftp_server.client_kwargs(host_key=other_line))

    with pytest.raises(TransportError) as refused:
        client.upload(make_file("x.csv", 10), "x.csv", destination(unique_folder))

    message = str(refused.value)
    assert "host key did not match" in message
    assert parse_host_key(other_line).fingerprint in message
    assert parse_host_key(sftp_server.host_key_line).fingerprint in message
    assert parse_host_key(other_line).fingerprint.startswith("SHA256:")
    assert not (sftp_server.root / unique_folder).exists()


def test_a_host_key_of_another_type_is_refused(sftp_server, make_file):
    rsa_line = public_key_line(asyncssh.generate_private_key("ssh-rsa", key_size=2048))
    with pytest.raises(TransportError, match="host key did not match: the server offers no ssh-rsa host key"):
        SftpClient(**sftp_server.client_kwargs(host_key=rsa_line)).upload(
            make_file("x.csv", 10), "x.csv", destination()
        )


def test_a_wrong_password_fails_without_showing_it(sftp_server, make_file, caplog, render_error):
    secret = "wrong-pw-sftp-77aa13"
    caplog.set_level(logging.DEBUG)

    with pytest.raises(TransportError) as failed:
        SftpClient(**sftp_server.client_kwargs(password=secret)).upload(make_file("x.csv", 10), "x.csv", destination())

    assert str(failed.value) == (
        f"sftp 127.0.0.1:{sftp_server.port}: authentication failed for user 'extracts' (tried: password)"
    )
    rendered = render_error(failed.value)
    assert "During handling" not in rendered and secret not in rendered
    assert secret not in caplog.text and sftp_server.password not in caplog.text


def _private_key_texts() -> dict[str, str]:
    """One client key per supported type and encoding."""
    none = serialization.NoEncryption()
    pem = serialization.Encoding.PEM
    return {
        "ed25519-openssh": ed25519.Ed25519PrivateKey.generate()
        .private_bytes(pem, serialization.PrivateFormat.OpenSSH, none)
        .decode(),
        "rsa-pem-pkcs1": rsa.generate_private_key(public_exponent=65537, key_size=2048)
        .private_bytes(pem, serialization.PrivateFormat.TraditionalOpenSSL, none)
        .decode(),
        "ecdsa-pem-pkcs8": ec.generate_private_key(ec.SECP256R1())
        .private_bytes(pem, serialization.PrivateFormat.PKCS8, none)
        .decode(),
        "ed25519-pem-pkcs8": ed25519.Ed25519PrivateKey.generate()
        .private_bytes(pem, serialization.PrivateFormat.PKCS8, none)
        .decode(),
    }


@pytest.mark.parametrize("kind", sorted(_private_key_texts()))
def test_key_authentication(sftp_server, make_file, unique_folder, kind):
    key_text = _private_key_texts()[kind]
    key = load_private_key(key_text)
    sftp_server.authorize_key(f"{key.get_name()} {key.get_base64()}")
    client = SftpClient(**sftp_server.client_kwargs(password=None, private_key=key_text))

    client.upload(make_file("k.csv", 1000), "k.csv", destination(unique_folder))
    client.close()

    assert (sftp_server.root / unique_folder / "k.csv").stat().st_size == 1000


def test_the_servers_own_client_key_and_a_one_line_key_both_work(sftp_server, make_file, unique_folder):
    one_line = sftp_server.private_key.strip().replace("\n", "\\n")
    for key_text in (sftp_server.private_key, one_line):
        client = SftpClient(**sftp_server.client_kwargs(password=None, private_key=key_text))
        client.upload(make_file("k.csv", 10), "k.csv", destination(unique_folder))
        client.close()


def test_an_unauthorized_key_fails_then_the_password_is_tried(sftp_server, make_file, unique_folder):
    stranger = ed25519.Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption()
    )
    with pytest.raises(TransportError, match=r"authentication failed for user 'extracts' \(tried: private key\)"):
        SftpClient(**sftp_server.client_kwargs(password=None, private_key=stranger.decode())).upload(
            make_file("x.csv", 10), "x.csv", destination(unique_folder)
        )
    both = SftpClient(**sftp_server.client_kwargs(private_key=stranger.decode()))
    both.upload(make_file("x.csv", 10), "x.csv", destination(unique_folder))
    both.close()


def test_unreadable_or_encrypted_keys_are_refused_without_echoing_them():
    with pytest.raises(TransportError, match="cannot be read") as unreadable:
        load_private_key("-----BEGIN OPENSSH PRIVATE KEY-----\nnot-a-key-zz91\n-----END OPENSSH PRIVATE KEY-----")
    assert "not-a-key-zz91" not in str(unreadable.value)
    encrypted = (
        ed25519.Ed25519PrivateKey.generate()
        .private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.OpenSSH,
            serialization.BestAvailableEncryption(b"passphrase"),
        )
        .decode()
    )
    with pytest.raises(TransportError, match="passphrase"):
        load_private_key(encrypted)


def test_host_key_lines_parse_for_each_type():
    for key_type in ("ssh-ed25519", "ecdsa-sha2-nistp256", "ssh-rsa"):
        key = asyncssh.generate_private_key(key_type, **({"key_size": 2048} if key_type == "ssh-rsa" else {}))
        parsed = parse_host_key(public_key_line(key) + " comment@host")
        assert isinstance(parsed, paramiko.PKey) and parsed.get_name() == key_type
    with pytest.raises(TransportError):
        parse_host_key("ssh-ed25519 not-base64!")


def test_the_uri_holds_no_credentials(sftp_server, client, make_file, unique_folder):
    receipt = client.upload(make_file("u.csv", 10), "u.csv", destination(unique_folder))
    assert "extracts@" not in receipt.uri and sftp_server.password not in receipt.uri
    assert Path(receipt.uri.split(str(sftp_server.port), 1)[1]) == Path(f"/{unique_folder}/u.csv")
