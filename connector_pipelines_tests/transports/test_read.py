"""The read side of every file transport (`FileSource`), against real loopback servers: list, download, move,
write_text, and the refusal of unsafe names and folders.

Each test runs for the folder, SFTP, S3, FTP and FTPS clients. Files are seeded and checked straight in the
server's own storage (its root folder, or moto's bucket), never through the client under test.
"""

from __future__ import annotations

import ftplib
import hashlib
import os
import re
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError

from connector_pipelines.errors import TransportError
from connector_pipelines.imports.files import FilePattern, check_file_name
from connector_pipelines.transports.base import FileSource, RemoteFile
from connector_pipelines.transports.folder import FolderClient
from connector_pipelines.transports.ftp import FtpClient, parse_ftp_time
from connector_pipelines.transports.s3 import S3Client
from connector_pipelines.transports.sftp import SftpClient

pytestmark = pytest.mark.timeout(60)

KINDS = ["folder", "sftp", "s3", "ftp", "ftps"]
DELIVERED = ["Conversions_2019_a.csv", "Conversions_2024_01.csv", "Conversions_2025_x.csv", "other.csv"]
SEEDED_AT = datetime(2024, 3, 1, 12, 0, 0, tzinfo=UTC)
UNSAFE_NAMES = ["../x.csv", "..", "a/b.csv", "x\x00.csv", "a\\b.csv"]


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def join(*parts: str) -> str:
    return "/".join(part for part in parts if part)


class Side:
    """One client under test plus direct access to where its files really live.

    Paths given to `put`, `read` and `entries` are relative to the client's root (login folder, S3 prefix or
    folder path). `folder(...)` is the folder to pass to the client: under a folder of its own on a shared
    server, so tests never see each other's files.
    """

    def __init__(self, kind: str, client: FileSource, base: str, root: Path | None = None, s3: Any = None):
        self.kind = kind
        self.client = client
        self.base = base
        self._root = root
        self._s3 = s3

    @property
    def keeps_mtime(self) -> bool:
        """Whether a seeded file's modification time can be set (S3 stamps LastModified itself)."""
        return self._s3 is None

    def folder(self, *parts: str) -> str:
        return join(self.base, *parts)

    def put(self, path: str, data: bytes, modified: datetime | None = None) -> None:
        if self._s3 is not None:
            server, prefix = self._s3
            server.client().put_object(Bucket=server.bucket, Key=join(prefix, path), Body=data)
            return
        assert self._root is not None
        local = self._root / path
        local.parent.mkdir(parents=True, exist_ok=True)
        local.write_bytes(data)
        if modified is not None:
            os.utime(local, (modified.timestamp(), modified.timestamp()))

    def read(self, path: str) -> bytes | None:
        if self._s3 is not None:
            server, prefix = self._s3
            try:
                return server.client().get_object(Bucket=server.bucket, Key=join(prefix, path))["Body"].read()
            except ClientError:
                return None
        assert self._root is not None
        local = self._root / path
        return local.read_bytes() if local.is_file() else None

    def entries(self, folder: str) -> list[str]:
        """Every name directly in the folder, files and folders, temporary files included."""
        if self._s3 is not None:
            server, prefix = self._s3
            key_prefix = join(prefix, folder) + "/"
            listed = server.client().list_objects_v2(Bucket=server.bucket, Prefix=key_prefix, Delimiter="/")
            names = [entry["Key"][len(key_prefix) :] for entry in listed.get("Contents", [])]
            names += [entry["Prefix"][len(key_prefix) :].rstrip("/") for entry in listed.get("CommonPrefixes", [])]
            return sorted(names)
        assert self._root is not None
        local = self._root / folder
        return sorted(os.listdir(local)) if local.is_dir() else []


@pytest.fixture(params=KINDS)
def side(request, tmp_path, unique_folder) -> Iterator[Side]:
    kind = request.param
    if kind == "folder":
        root = tmp_path / "share"
        root.mkdir()
        made = Side(kind, FolderClient(root), unique_folder, root=root)
    elif kind == "sftp":
        server = request.getfixturevalue("sftp_server")
        made = Side(kind, SftpClient(**server.client_kwargs()), unique_folder, root=server.root)
    elif kind == "s3":
        server = request.getfixturevalue("s3_server")
        # A prefix of its own: the prefix is the client's root, so "" is a folder no other test touches.
        prefix = f"{unique_folder}/deliveries"
        made = Side(kind, S3Client(**server.client_kwargs(prefix=prefix)), "", s3=(server, prefix))
    else:
        server = request.getfixturevalue(f"{kind}_server")
        made = Side(kind, FtpClient(**server.client_kwargs()), unique_folder, root=server.root)
    yield made
    made.client.close()


@pytest.fixture
def foreign_timezone() -> Iterator[None]:
    """Run with a local time zone far from UTC, so a time read as local instead of UTC is off by hours."""
    previous = os.environ.get("TZ")
    os.environ["TZ"] = "America/New_York"
    time.tzset()
    yield
    if previous is None:
        del os.environ["TZ"]
    else:
        os.environ["TZ"] = previous
    time.tzset()


def seed_delivery(side: Side) -> dict[str, bytes]:
    """The four delivered files in `in/`, one minute apart, plus a subfolder holding a file of its own."""
    contents = {name: f"{name}\n".encode() * (index + 1) for index, name in enumerate(DELIVERED)}
    for index, (name, data) in enumerate(contents.items()):
        side.put(join(side.folder("in"), name), data, SEEDED_AT + timedelta(minutes=index))
    side.put(join(side.folder("in", "Conversions_2024_sub"), "Conversions_2024_99.csv"), b"nested\n")
    return contents


# ------------------------------------------------------------------------------------------------
# list_files


def test_list_files_gives_direct_regular_files_for_a_pattern_to_filter(side, foreign_timezone):
    contents = seed_delivery(side)

    listed = side.client.list_files(side.folder("in"))

    # Sorted by name; the subfolder and the file inside it are not listed.
    assert [file.name for file in listed] == DELIVERED
    assert all(isinstance(file, RemoteFile) for file in listed)
    assert {file.name: file.size for file in listed} == {name: len(data) for name, data in contents.items()}
    pattern = FilePattern("Conversions_202?_*.csv")
    assert [file.name for file in listed if pattern.matches(file.name)] == [
        "Conversions_2024_01.csv",
        "Conversions_2025_x.csv",
    ]
    for file in listed:
        assert file.modified.utcoffset() == timedelta(0)
    if side.keeps_mtime:
        expected = {name: SEEDED_AT + timedelta(minutes=index) for index, name in enumerate(DELIVERED)}
        assert {file.name: file.modified for file in listed} == expected
    else:
        now = datetime.now(UTC)
        assert all(abs(now - file.modified) < timedelta(minutes=5) for file in listed)


def test_a_missing_folder_lists_empty_and_is_not_created(side):
    side.put(join(side.folder("in"), "x.csv"), b"x")

    assert side.client.list_files(side.folder("in", "not-there")) == []
    assert side.client.list_files(side.folder("nowhere", "deeper")) == []

    assert side.entries(side.folder()) == ["in"]
    assert side.entries(side.folder("in")) == ["x.csv"]


def test_the_root_folder_is_listed_with_an_empty_folder_name(side, unique_folder):
    # On shared servers the root holds other tests' folders; a file name of our own is enough to find.
    name = f"{unique_folder}-top.csv"
    side.put(name, b"top\n")
    side.put(join(side.folder("in"), "deeper.csv"), b"deeper\n")

    listed = {file.name: file.size for file in side.client.list_files("")}

    assert listed[name] == 4
    assert "deeper.csv" not in listed and unique_folder not in listed and "in" not in listed


# ------------------------------------------------------------------------------------------------
# download


def test_download_is_byte_identical_for_a_multi_megabyte_file(side, make_file, tmp_path):
    data = make_file("Conversions_2024_01.csv", 6 * 1024 * 1024 + 123).read_bytes()
    side.put(join(side.folder("in"), "Conversions_2024_01.csv"), data)
    target = tmp_path / "downloads" / "run-1" / "Conversions_2024_01.csv"

    side.client.download(side.folder("in"), "Conversions_2024_01.csv", target)

    assert sha256(target.read_bytes()) == sha256(data)
    assert os.listdir(target.parent) == ["Conversions_2024_01.csv"]  # no temporary file left behind
    assert side.read(join(side.folder("in"), "Conversions_2024_01.csv")) == data  # downloading keeps the source


def test_download_replaces_an_existing_local_file(side, tmp_path):
    side.put(join(side.folder("in"), "a.csv"), b"new content\n")
    target = tmp_path / "a.csv"
    target.write_bytes(b"old content that is longer than the new one\n")

    side.client.download(side.folder("in"), "a.csv", target)

    assert target.read_bytes() == b"new content\n"


def test_download_of_a_missing_file_fails_and_leaves_nothing(side, tmp_path):
    side.put(join(side.folder("in"), "present.csv"), b"x")
    target = tmp_path / "downloads" / "missing.csv"

    for folder in (side.folder("in"), side.folder("no-such-folder")):
        with pytest.raises(TransportError) as failed:
            side.client.download(folder, "missing.csv", target)
        assert str(failed.value).startswith(f"{side.client.system}: ")
        assert "missing.csv" in str(failed.value)

    assert not target.exists()
    assert not target.parent.exists() or os.listdir(target.parent) == []


def test_a_download_that_fails_after_writing_leaves_no_partial_file(side, tmp_path):
    # The local name is taken by a non-empty folder: the bytes arrive, then the final rename fails.
    side.put(join(side.folder("in"), "a.csv"), b"a" * 300_000)
    blocker = tmp_path / "downloads" / "a.csv"
    blocker.mkdir(parents=True)
    (blocker / "keep").write_text("keep")

    with pytest.raises(TransportError, match=f"^{re.escape(side.client.system)}: .*a.csv"):
        side.client.download(side.folder("in"), "a.csv", blocker)

    assert os.listdir(blocker.parent) == ["a.csv"]  # the temporary file is gone
    assert os.listdir(blocker) == ["keep"]


# ------------------------------------------------------------------------------------------------
# move


def test_move_to_archive_and_quarantine_creates_the_folders(side):
    side.put(join(side.folder("in"), "good.csv"), b"good\n")
    side.put(join(side.folder("in"), "bad.csv"), b"bad\n")

    side.client.move(side.folder("in"), "good.csv", side.folder("archive", "2024-03"))
    side.client.move(side.folder("in"), "bad.csv", side.folder("quarantine"), new_name="bad.csv.rejected")

    assert side.read(join(side.folder("archive", "2024-03"), "good.csv")) == b"good\n"
    assert side.read(join(side.folder("quarantine"), "bad.csv.rejected")) == b"bad\n"
    assert side.entries(side.folder("in")) == []
    assert side.entries(side.folder("quarantine")) == ["bad.csv.rejected"]
    assert side.client.list_files(side.folder("in")) == []


def test_move_onto_a_taken_name_numbers_it_on_folder_and_sftp_and_replaces_it_on_s3_and_ftp(side):
    side.put(join(side.folder("archive"), "a.csv"), b"processed yesterday\n")
    side.put(join(side.folder("in"), "a.csv"), b"delivered again today\n")

    side.client.move(side.folder("in"), "a.csv", side.folder("archive"))

    if side.kind in ("folder", "sftp"):  # never replaced (test_move_no_replace.py tries the races)
        assert side.read(join(side.folder("archive"), "a.csv")) == b"processed yesterday\n"
        assert side.read(join(side.folder("archive"), "a (2).csv")) == b"delivered again today\n"
        assert side.entries(side.folder("archive")) == ["a (2).csv", "a.csv"]
    else:
        assert side.read(join(side.folder("archive"), "a.csv")) == b"delivered again today\n"
        assert side.entries(side.folder("archive")) == ["a.csv"]
    assert side.read(join(side.folder("in"), "a.csv")) is None


def test_moving_a_missing_file_fails_and_keeps_the_destination(side):
    side.put(join(side.folder("archive"), "a.csv"), b"archived\n")
    side.put(join(side.folder("in"), "other.csv"), b"other\n")

    with pytest.raises(TransportError, match="a.csv") as failed:
        side.client.move(side.folder("in"), "a.csv", side.folder("archive"))

    assert str(failed.value).startswith(f"{side.client.system}: ")
    assert side.read(join(side.folder("archive"), "a.csv")) == b"archived\n"


def test_moving_a_file_onto_itself_keeps_it(side):
    side.put(join(side.folder("in"), "a.csv"), b"a\n")

    side.client.move(side.folder("in"), "a.csv", side.folder("in"))

    assert side.read(join(side.folder("in"), "a.csv")) == b"a\n"


# ------------------------------------------------------------------------------------------------
# write_text


def test_write_text_writes_utf8_atomically_into_a_created_folder(side):
    report = "rejected: Conversions_2024_01.csv\nreason: the column 'Datum' is missing — ünïcödé\n"

    side.client.write_text(side.folder("quarantine"), "Conversions_2024_01.csv.reason.txt", report)
    side.client.write_text(side.folder("quarantine"), "Conversions_2024_01.csv.reason.txt", report + "again\n")

    assert side.read(join(side.folder("quarantine"), "Conversions_2024_01.csv.reason.txt")) == (
        report + "again\n"
    ).encode("utf-8")
    # Only the file: the temporary name it was written under is gone.
    assert side.entries(side.folder("quarantine")) == ["Conversions_2024_01.csv.reason.txt"]


# ------------------------------------------------------------------------------------------------
# unsafe names and folders


@pytest.mark.parametrize("name", UNSAFE_NAMES)
def test_unsafe_names_are_refused_by_every_method(side, tmp_path, name):
    side.put(join(side.folder("in"), "safe.csv"), b"safe\n")
    reason = check_file_name(name)
    assert reason is not None
    calls = {
        "download": lambda: side.client.download(side.folder("in"), name, tmp_path / "local.csv"),
        "move": lambda: side.client.move(side.folder("in"), name, side.folder("archive")),
        "move to": lambda: side.client.move(side.folder("in"), "safe.csv", side.folder("archive"), new_name=name),
        "write_text": lambda: side.client.write_text(side.folder("in"), name, "report"),
    }
    for method, call in calls.items():
        with pytest.raises(TransportError) as refused:
            call()
        assert str(refused.value) == f"{side.client.system}: refusing the file name {name!r}: {reason}", method

    assert side.entries(side.folder()) == ["in"]  # no archive folder, nothing written beside `in`
    assert side.entries(side.folder("in")) == ["safe.csv"]
    assert not (tmp_path / "local.csv").exists()


@pytest.mark.parametrize("folder", ["../escape", "in/../../escape", "..\\escape"])
def test_folders_leading_upwards_are_refused(side, tmp_path, folder):
    side.put(join(side.folder("in"), "a.csv"), b"a\n")
    calls = [
        lambda: side.client.list_files(folder),
        lambda: side.client.download(folder, "a.csv", tmp_path / "a.csv"),
        lambda: side.client.move(side.folder("in"), "a.csv", folder),
        lambda: side.client.move(folder, "a.csv", side.folder("archive")),
        lambda: side.client.write_text(folder, "a.txt", "report"),
    ]
    for call in calls:
        with pytest.raises(TransportError, match="may not contain '..'"):
            call()
    assert side.entries(side.folder("in")) == ["a.csv"]


# ------------------------------------------------------------------------------------------------
# Transport-specific behaviour


@pytest.fixture
def share(tmp_path) -> Path:
    root = tmp_path / "share"
    (root / "in").mkdir(parents=True)
    return root


def test_folder_symlinks_never_lead_outside_the_root(share, tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.csv").write_text("secret\n")
    (share / "link").symlink_to(outside)
    (share / "in" / "secret.csv").symlink_to(outside / "secret.csv")
    (share / "in" / "real.csv").write_text("real\n")
    client = FolderClient(share)

    # A folder that is a symlink out of the root.
    for call in (
        lambda: client.list_files("link"),
        lambda: client.download("link", "secret.csv", tmp_path / "x.csv"),
        lambda: client.move("link", "secret.csv", "archive"),
        lambda: client.move("in", "real.csv", "link"),
        lambda: client.write_text("link", "report.txt", "x"),
    ):
        with pytest.raises(TransportError, match="leads outside the connection path"):
            call()
    # A file that is a symlink out of the root: not listed, not read, not moved.
    assert [file.name for file in client.list_files("in")] == ["real.csv"]
    with pytest.raises(TransportError, match="is not a regular file"):
        client.download("in", "secret.csv", tmp_path / "x.csv")
    with pytest.raises(TransportError, match="is not a regular file"):
        client.move("in", "secret.csv", "archive")
    assert not (tmp_path / "x.csv").exists()
    assert sorted(os.listdir(outside)) == ["secret.csv"]
    assert (share / "in" / "real.csv").exists()


def test_folder_lists_a_badly_named_file_so_the_caller_can_refuse_it(share):
    # A partner's file whose name holds a newline: listed as it is; check_file_name says why it is refused.
    (share / "in" / "bad\nname.csv").write_text("x\n")

    [listed] = FolderClient(share).list_files("in")

    assert listed.name == "bad\nname.csv"
    assert check_file_name(listed.name) == "the name contains the control character U+000A"
    with pytest.raises(TransportError, match="refusing the file name"):
        FolderClient(share).move("in", listed.name, "quarantine")


def test_folder_refuses_an_unmounted_share_instead_of_reporting_no_files(tmp_path):
    with pytest.raises(TransportError, match="does not exist"):
        FolderClient(tmp_path / "not-mounted").list_files("in")


def test_folder_a_file_in_place_of_the_folder_is_an_error_not_an_empty_list(share):
    (share / "in" / "a.csv").write_text("x\n")
    with pytest.raises(TransportError, match="is not a folder"):
        FolderClient(share).list_files("in/a.csv")


def test_sftp_move_into_a_taken_name_gets_a_number_and_a_missing_source_costs_nothing(sftp_server, unique_folder):
    # In `legacy_folder` the server refuses posix-rename; moves never needed it: they never replace.
    legacy = sftp_server.root / sftp_server.legacy_folder
    name = f"{unique_folder}.csv"
    (legacy / name).write_bytes(b"archived earlier\n")
    (sftp_server.root / unique_folder).mkdir()
    (sftp_server.root / unique_folder / name).write_bytes(b"delivered now\n")
    client = SftpClient(**sftp_server.client_kwargs())

    assert client.move(unique_folder, name, sftp_server.legacy_folder) == f"{unique_folder} (2).csv"

    assert (legacy / name).read_bytes() == b"archived earlier\n"
    assert (legacy / f"{unique_folder} (2).csv").read_bytes() == b"delivered now\n"
    assert list((sftp_server.root / unique_folder).iterdir()) == []
    with pytest.raises(TransportError, match="there is no file"):
        client.move(unique_folder, name, sftp_server.legacy_folder)
    assert (legacy / name).read_bytes() == b"archived earlier\n"
    client.close()
    (legacy / name).unlink()
    (legacy / f"{unique_folder} (2).csv").unlink()


def test_sftp_listing_skips_symlinks(sftp_server, unique_folder):
    folder = sftp_server.root / unique_folder
    folder.mkdir()
    (folder / "real.csv").write_text("real\n")
    (folder / "link.csv").symlink_to(folder / "real.csv")
    client = SftpClient(**sftp_server.client_kwargs())

    assert [file.name for file in client.list_files(unique_folder)] == ["real.csv"]
    client.close()


def test_s3_listing_ignores_the_folder_marker_and_deeper_keys(s3_server, unique_folder):
    s3 = s3_server.client()
    for key in (f"{unique_folder}/in/", f"{unique_folder}/in/a.csv", f"{unique_folder}/in/sub/b.csv"):
        s3.put_object(Bucket=s3_server.bucket, Key=key, Body=b"" if key.endswith("/") else b"data")
    client = S3Client(**s3_server.client_kwargs(prefix=unique_folder))

    assert [(file.name, file.size) for file in client.list_files("in")] == [("a.csv", 4)]
    assert client.list_files("") == []  # `in/` is a folder under the prefix, not a file
    client.close()


def test_s3_errors_name_the_bucket_and_hold_no_secret(s3_server, tmp_path):
    client = S3Client(**s3_server.client_kwargs(bucket="no-such-bucket"))
    with pytest.raises(TransportError, match="s3 bucket 'no-such-bucket'.*NoSuchBucket") as failed:
        client.list_files("in")
    assert s3_server.secret_access_key not in str(failed.value)
    with pytest.raises(TransportError, match="s3 bucket 'no-such-bucket'"):
        client.download("in", "a.csv", tmp_path / "a.csv")
    assert list(tmp_path.iterdir()) == []


@pytest.fixture(scope="module", params=["ftp", "ftps"])
def ftp_server_without_mlsd(request):
    """An FTP(S) server of the kind that predates RFC 3659: no MLSD, no MLST (so FEAT does not announce it)."""
    from connector_pipelines_tests.servers.ftp import FtpTestServer

    with FtpTestServer(tls=request.param == "ftps") as server:
        # The handler class is this server's own subclass; narrowing its commands affects no other server.
        handler = server._server.handler
        handler.proto_cmds = {cmd: info for cmd, info in handler.proto_cmds.items() if cmd not in ("MLSD", "MLST")}
        yield server


def test_ftp_listing_falls_back_to_nlst_size_and_mdtm(ftp_server_without_mlsd, unique_folder, foreign_timezone):
    server = ftp_server_without_mlsd
    folder = server.root / unique_folder
    (folder / "sub").mkdir(parents=True)
    (folder / "sub" / "nested.csv").write_text("nested\n")
    for index, name in enumerate(DELIVERED):
        (folder / name).write_bytes(b"x" * (index + 1))
        os.utime(folder / name, (SEEDED_AT.timestamp() + 60 * index,) * 2)
    client = FtpClient(**server.client_kwargs())
    # The server really lacks MLSD: the listing below cannot have come from it.
    with pytest.raises(ftplib.error_perm, match="500"):
        client._connect().sendcmd("MLST")

    listed = client.list_files(unique_folder)
    client.close()

    assert [(file.name, file.size) for file in listed] == [(name, index + 1) for index, name in enumerate(DELIVERED)]
    assert [file.modified for file in listed] == [SEEDED_AT + timedelta(minutes=index) for index in range(4)]


def test_ftp_times_are_read_as_utc():
    assert parse_ftp_time("20240301120000") == datetime(2024, 3, 1, 12, 0, tzinfo=UTC)
    assert parse_ftp_time("20240301120000.25") == datetime(2024, 3, 1, 12, 0, 0, 250_000, tzinfo=UTC)
    with pytest.raises(ValueError):
        parse_ftp_time("yesterday")


def test_remote_file_refuses_a_naive_time():
    with pytest.raises(ValueError, match="aware UTC"):
        RemoteFile(name="a.csv", size=1, modified=datetime(2024, 3, 1, 12, 0))
    with pytest.raises(ValueError, match="aware UTC"):
        RemoteFile(name="a.csv", size=1, modified=datetime(2024, 3, 1, 12, 0, tzinfo=timezone(timedelta(hours=1))))
