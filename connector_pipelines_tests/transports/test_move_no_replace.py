"""Drop boxes are written by partners: a symlink placed there is never read or moved (the file it points at stays
untouched), and a move never replaces a file already at the target name, it takes a numbered name instead. For
the folder client on a local folder and for the SFTP client against the real SFTP server fixture."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest

from connector_pipelines.errors import TransportError
from connector_pipelines.transports.folder import SYMLINK_SKIPPED, FolderClient, numbered_names
from connector_pipelines.transports.sftp import SftpClient

pytestmark = pytest.mark.timeout(60)

PRIVATE = b"private key material\n"


@pytest.fixture
def private_file(tmp_path: Path) -> Path:
    """A file outside every drop box that a partner would like to read or carry off."""
    outside = tmp_path / "private"
    outside.mkdir()
    path = outside / "secret.csv"
    path.write_bytes(PRIVATE)
    os.utime(path, (1_600_000_000, 1_600_000_000))
    return path


def assert_untouched(private_file: Path) -> None:
    assert private_file.read_bytes() == PRIVATE
    assert private_file.stat().st_mtime == 1_600_000_000
    assert sorted(os.listdir(private_file.parent)) == ["secret.csv"]
    assert not private_file.is_symlink()


# ------------------------------------------------------------------------------------------------
# Folder


@pytest.fixture
def box(tmp_path: Path) -> Path:
    root = tmp_path / "box"
    (root / "in").mkdir(parents=True)
    return root


def test_folder_a_symlink_in_the_drop_box_is_skipped_with_a_reason_and_never_read_or_moved(
    box, private_file, tmp_path, caplog
):
    (box / "in" / "orders.csv").symlink_to(private_file)
    (box / "in" / "real.csv").write_bytes(b"real\n")
    client = FolderClient(box)

    with caplog.at_level(logging.WARNING, logger="connector_pipelines.transports.folder"):
        listed = client.list_files("in")
        client.list_files("in")  # a sensor lists again and again: said once

    assert [file.name for file in listed] == ["real.csv"]
    assert client.skipped == [("orders.csv", SYMLINK_SKIPPED)]
    said = [record.getMessage() for record in caplog.records if "orders.csv" in record.getMessage()]
    assert said == [f"{client.system}: skipped 'orders.csv' in the folder 'in': {SYMLINK_SKIPPED}"]
    with pytest.raises(TransportError, match="is not a regular file \\(it is a symbolic link, which is never followed"):
        client.download("in", "orders.csv", tmp_path / "local.csv")
    with pytest.raises(TransportError, match="is not a regular file \\(it is a symbolic link"):
        client.move("in", "orders.csv", "archive")
    assert not (tmp_path / "local.csv").exists()
    assert not (box / "archive").exists()
    assert (box / "in" / "orders.csv").is_symlink()
    assert_untouched(private_file)


def test_folder_a_move_never_replaces_an_archived_file_it_takes_a_numbered_name(box):
    (box / "archive").mkdir()
    (box / "archive" / "orders_1.csv.gz").write_bytes(b"archived yesterday")
    (box / "archive" / "orders_1 (2).csv.gz").write_bytes(b"archived this morning")
    (box / "in" / "orders_1.csv.gz").write_bytes(b"delivered again")
    client = FolderClient(box)

    assert client.move("in", "orders_1.csv.gz", "archive") == "orders_1 (3).csv.gz"

    assert (box / "archive" / "orders_1.csv.gz").read_bytes() == b"archived yesterday"
    assert (box / "archive" / "orders_1 (2).csv.gz").read_bytes() == b"archived this morning"
    assert (box / "archive" / "orders_1 (3).csv.gz").read_bytes() == b"delivered again"
    assert os.listdir(box / "in") == []


def test_folder_a_symlink_at_the_archive_name_is_neither_replaced_nor_followed(box, private_file):
    (box / "archive").mkdir()
    (box / "archive" / "orders.csv").symlink_to(private_file)
    (box / "in" / "orders.csv").write_bytes(b"delivered\n")

    assert FolderClient(box).move("in", "orders.csv", "archive") == "orders (2).csv"

    assert os.readlink(box / "archive" / "orders.csv") == str(private_file)
    assert (box / "archive" / "orders (2).csv").read_bytes() == b"delivered\n"
    assert_untouched(private_file)


def test_folder_a_file_swapped_for_a_symlink_after_the_check_is_not_moved(box, private_file):
    # The race itself, step by step: the file is checked (its descriptor-relative lstat kept), then the partner
    # swaps a symlink in under the same name before the move links it.
    (box / "in" / "orders.csv").write_bytes(b"delivered\n")
    (box / "archive").mkdir()
    client = FolderClient(box)
    with (
        client._folder(box.resolve() / "in", "in") as source,
        client._folder(box.resolve() / "archive", "archive") as target,
    ):
        checked = client._regular_entry(source, "orders.csv", "in")
        (box / "in" / "orders.csv").unlink()
        (box / "in" / "orders.csv").symlink_to(private_file)

        with pytest.raises(TransportError, match="changed while it was being moved"):
            client._move_without_replacing(source, "orders.csv", target, "orders.csv", checked, "in")

    assert os.listdir(box / "archive") == []
    assert (box / "in" / "orders.csv").is_symlink()
    assert_untouched(private_file)


def test_folder_a_folder_swapped_for_a_symlink_after_it_was_resolved_is_not_entered(box, private_file, tmp_path):
    client = FolderClient(box)
    resolved = client._source_dir("in")
    (box / "in").rmdir()
    (box / "in").symlink_to(private_file.parent)

    with pytest.raises(TransportError, match="changed while it was being used"):
        with client._folder(resolved, "in"):
            pass
    assert_untouched(private_file)


def test_folder_write_text_does_not_write_through_a_symlinked_report_name(box, private_file):
    (box / "quarantine").mkdir()
    (box / "quarantine" / "orders.csv.report.txt").symlink_to(private_file)

    FolderClient(box).write_text("quarantine", "orders.csv.report.txt", "rejected\n")

    # The symlink itself was replaced by the report; the file it pointed at was not written.
    assert not (box / "quarantine" / "orders.csv.report.txt").is_symlink()
    assert (box / "quarantine" / "orders.csv.report.txt").read_text() == "rejected\n"
    assert_untouched(private_file)


def test_numbered_names_keep_the_extension_last():
    names = numbered_names("orders_2024.csv.gz")
    assert [next(names) for _ in range(3)] == ["orders_2024.csv.gz", "orders_2024 (2).csv.gz", "orders_2024 (3).csv.gz"]
    assert list(numbered_names("README"))[:2] == ["README", "README (2)"]


# ------------------------------------------------------------------------------------------------
# SFTP (the real asyncssh server fixture, whose files live under sftp_server.root)


def test_sftp_a_symlink_in_the_drop_box_is_skipped_and_never_read_or_moved(
    sftp_server, unique_folder, private_file, tmp_path
):
    folder = sftp_server.root / unique_folder
    folder.mkdir()
    (folder / "orders.csv").symlink_to(private_file)  # points out of the server's root
    (folder / "real.csv").write_bytes(b"real\n")
    client = SftpClient(**sftp_server.client_kwargs())
    try:
        assert [file.name for file in client.list_files(unique_folder)] == ["real.csv"]
        assert client.skipped == [("orders.csv", SYMLINK_SKIPPED)]
        with pytest.raises(TransportError, match="is not a regular file \\(it is a symbolic link"):
            client.download(unique_folder, "orders.csv", tmp_path / "local.csv")
        with pytest.raises(TransportError, match="is not a regular file \\(it is a symbolic link"):
            client.move(unique_folder, "orders.csv", f"{unique_folder}/archive")
    finally:
        client.close()

    assert not (tmp_path / "local.csv").exists()
    assert not (folder / "archive").exists()
    assert (folder / "orders.csv").is_symlink()
    assert_untouched(private_file)


def test_sftp_a_move_never_replaces_an_archived_file_it_takes_a_numbered_name(sftp_server, unique_folder):
    folder = sftp_server.root / unique_folder
    (folder / "archive").mkdir(parents=True)
    (folder / "archive" / "orders.csv").write_bytes(b"archived yesterday\n")
    (folder / "orders.csv").write_bytes(b"delivered again\n")
    (folder / "bad.csv").write_bytes(b"bad\n")
    client = SftpClient(**sftp_server.client_kwargs())
    try:
        assert client.move(unique_folder, "orders.csv", f"{unique_folder}/archive") == "orders (2).csv"
        # A renamed target (new_name) that is taken gets a number too.
        assert client.move(unique_folder, "bad.csv", f"{unique_folder}/archive", new_name="orders.csv") == (
            "orders (3).csv"
        )
    finally:
        client.close()

    assert (folder / "archive" / "orders.csv").read_bytes() == b"archived yesterday\n"
    assert (folder / "archive" / "orders (2).csv").read_bytes() == b"delivered again\n"
    assert (folder / "archive" / "orders (3).csv").read_bytes() == b"bad\n"
    assert sorted(path.name for path in folder.iterdir()) == ["archive"]


def test_sftp_a_symlink_at_the_archive_name_is_neither_replaced_nor_followed(sftp_server, unique_folder, private_file):
    folder = sftp_server.root / unique_folder
    (folder / "archive").mkdir(parents=True)
    (folder / "archive" / "orders.csv").symlink_to(private_file)
    (folder / "orders.csv").write_bytes(b"delivered\n")
    client = SftpClient(**sftp_server.client_kwargs())
    try:
        assert client.move(unique_folder, "orders.csv", f"{unique_folder}/archive") == "orders (2).csv"
    finally:
        client.close()

    assert os.readlink(folder / "archive" / "orders.csv") == str(private_file)
    assert (folder / "archive" / "orders (2).csv").read_bytes() == b"delivered\n"
    assert_untouched(private_file)
