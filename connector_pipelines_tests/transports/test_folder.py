"""FolderClient: atomic writes into a local folder, and the name/folder rules every transport shares."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from connector_pipelines.errors import TransportError
from connector_pipelines.spec.extract import FileDestination
from connector_pipelines.transports.folder import FolderClient, check_remote_name, folder_parts, redact

BAD_NAMES = ["../x.csv", "a/b.csv", "a\\b.csv", ".hidden", "..", "", "a..b.csv"]


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def destination(folder: str = "") -> FileDestination:
    return FileDestination(connection="out", folder=folder)


@pytest.fixture
def root(tmp_path: Path) -> Path:
    path = tmp_path / "share"
    path.mkdir()
    return path


@pytest.mark.parametrize("size", [1_000, 6 * 1024 * 1024])
def test_upload_writes_the_bytes_and_returns_a_file_uri(root, make_file, size):
    local = make_file("orders.csv", size)

    receipt = FolderClient(root).upload(local, "orders.csv", destination("exports/daily"))

    written = root / "exports" / "daily" / "orders.csv"
    assert sha256(written) == sha256(local)
    assert receipt.uri == written.resolve().as_uri()
    assert receipt.uri.startswith("file:///")
    assert sorted(p.name for p in written.parent.iterdir()) == ["orders.csv"]  # no temporary file left


def test_upload_replaces_an_existing_file(root, make_file):
    client = FolderClient(root)
    client.upload(make_file("a.csv", 100), "a.csv", destination())
    newer = make_file("a.csv", 200)

    client.upload(newer, "a.csv", destination())

    assert (root / "a.csv").read_bytes() == newer.read_bytes()


@pytest.mark.parametrize("name", BAD_NAMES)
def test_names_that_are_not_plain_file_names_are_refused(root, make_file, name):
    with pytest.raises(TransportError, match="not a plain file name"):
        FolderClient(root).upload(make_file("x.csv", 10), name, destination())
    assert list(root.iterdir()) == []


def test_a_folder_that_leads_outside_through_a_symlink_is_refused(root, tmp_path, make_file):
    outside = tmp_path / "outside"
    outside.mkdir()
    (root / "link").symlink_to(outside)

    with pytest.raises(TransportError, match="leads outside the connection path"):
        FolderClient(root).upload(make_file("x.csv", 10), "x.csv", destination("link/deeper"))
    assert list(outside.iterdir()) == []


def test_dot_dot_in_the_folder_is_refused_even_when_the_spec_was_bypassed(root, make_file):
    unchecked = FileDestination.model_construct(connection="out", folder="../escape", to=[], cc=[])
    with pytest.raises(TransportError, match="may not contain '..'"):
        FolderClient(root).upload(make_file("x.csv", 10), "x.csv", unchecked)


def test_a_missing_connection_folder_is_not_created(tmp_path, make_file):
    missing = tmp_path / "not-mounted"
    with pytest.raises(TransportError, match="does not exist"):
        FolderClient(missing).upload(make_file("x.csv", 10), "x.csv", destination("sub"))
    assert not missing.exists()


def test_a_failed_write_leaves_neither_the_file_nor_a_temporary_file(root, make_file):
    # The final name is taken by a non-empty folder, so the last step (os.replace) fails after the copy.
    blocker = root / "out" / "x.csv"
    blocker.mkdir(parents=True)
    (blocker / "keep").write_text("keep")

    with pytest.raises(TransportError, match="could not write 'x.csv'"):
        FolderClient(root).upload(make_file("x.csv", 50_000), "x.csv", destination("out"))

    assert sorted(p.name for p in (root / "out").iterdir()) == ["x.csv"]
    assert blocker.is_dir()


def test_shared_rules():
    check_remote_name("orders_2024-01-01.csv.gz", "sys")
    for name in BAD_NAMES:
        with pytest.raises(TransportError):
            check_remote_name(name, "sys")
    assert folder_parts("/a//b/./c/", "sys") == ["a", "b", "c"]
    assert folder_parts("a\\b", "sys") == ["a", "b"]
    assert folder_parts("", "sys") == []
    assert redact("login as bob with pw-1 failed", ["pw-1", None, ""]) == "login as bob with *** failed"
