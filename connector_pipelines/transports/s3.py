"""Deliver an extract file to an S3 bucket (or an S3-compatible store through `endpoint_url`), and read the files
a partner delivered there."""

from __future__ import annotations

from datetime import UTC
from pathlib import Path
from typing import Any

import boto3
from boto3.exceptions import Boto3Error, S3UploadFailedError
from boto3.s3.transfer import TransferConfig
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from connector_pipelines.errors import TransportError
from connector_pipelines.spec.extract import FileDestination
from connector_pipelines.transports.base import RemoteFile, UploadReceipt
from connector_pipelines.transports.folder import (
    atomic_local_file,
    check_remote_name,
    check_source_name,
    folder_parts,
    redact,
)

MB = 1024 * 1024
DEFAULT_MULTIPART_THRESHOLD = 64 * MB
DEFAULT_MULTIPART_CHUNKSIZE = 16 * MB
_S3_ERRORS = (Boto3Error, ClientError, BotoCoreError, OSError)


class S3Client:
    """Uploads files with boto3's managed transfer.

    An S3 object appears only when its upload completes, so no temporary name is needed. Files above
    `multipart_threshold` go up in parts; when a multipart upload fails, boto3's transfer manager aborts it
    (its failure cleanup calls AbortMultipartUpload), so no orphan parts keep costing storage.
    """

    def __init__(
        self,
        bucket: str,
        prefix: str = "",
        region: str = "us-east-1",
        endpoint_url: str | None = None,
        access_key_id: str | None = None,
        secret_access_key: str | None = None,
        timeout_seconds: float = 60,
        max_attempts: int = 5,
        multipart_threshold: int = DEFAULT_MULTIPART_THRESHOLD,
        multipart_chunksize: int = DEFAULT_MULTIPART_CHUNKSIZE,
        max_concurrency: int = 4,
    ):
        self.bucket = bucket
        self.prefix = prefix
        self.region = region
        self.endpoint_url = endpoint_url
        self._access_key_id = access_key_id
        self._secret_access_key = secret_access_key
        self.timeout_seconds = timeout_seconds
        self.max_attempts = max_attempts
        self.transfer_config = TransferConfig(
            multipart_threshold=multipart_threshold,
            multipart_chunksize=multipart_chunksize,
            max_concurrency=max_concurrency,
        )
        self._client: Any = None

    @property
    def system(self) -> str:
        where = f" at {self.endpoint_url}" if self.endpoint_url else ""
        return f"s3 bucket '{self.bucket}'{where}"

    def key_for(self, remote_name: str, destination: FileDestination) -> str:
        check_remote_name(remote_name, self.system)
        parts = folder_parts(self.prefix, self.system) + folder_parts(destination.folder, self.system)
        return "/".join([*parts, remote_name])

    def upload(self, local_path: Path, remote_name: str, destination: FileDestination) -> UploadReceipt:
        key = self.key_for(remote_name, destination)
        try:
            self._boto_client().upload_file(str(local_path), self.bucket, key, Config=self.transfer_config)
        except (S3UploadFailedError, ClientError, BotoCoreError, OSError) as exc:
            raise TransportError(f"{self.system}: upload of '{key}' failed: {self._describe(exc)}") from None
        return UploadReceipt(uri=f"s3://{self.bucket}/{key}")

    # ------------------------------------------------------------------------------------------------
    # Read side (`FileSource`): the objects a partner delivered under the prefix

    def list_files(self, folder: str) -> list[RemoteFile]:
        parts = self._parts(folder)
        prefix = "/".join(parts) + "/" if parts else ""
        files: list[RemoteFile] = []
        try:
            paginator = self._boto_client().get_paginator("list_objects_v2")
            # Delimiter "/": deeper keys come back as CommonPrefixes, so only direct children are listed.
            for page in paginator.paginate(Bucket=self.bucket, Prefix=prefix, Delimiter="/"):
                for entry in page.get("Contents", []):
                    name = entry["Key"][len(prefix) :]
                    if not name:
                        continue  # the zero-byte "folder" marker consoles create
                    modified = entry["LastModified"].astimezone(UTC)
                    files.append(RemoteFile(name=name, size=entry["Size"], modified=modified))
        except _S3_ERRORS as exc:
            raise TransportError(f"{self.system}: cannot list '{prefix}': {self._describe(exc)}") from None
        return sorted(files, key=lambda file: file.name)

    def download(self, folder: str, name: str, local_path: Path) -> None:
        key = self._key(folder, name)
        client = self._boto_client()
        try:
            size = client.head_object(Bucket=self.bucket, Key=key)["ContentLength"]
            with atomic_local_file(local_path) as sink:
                # The managed transfer streams ranged GETs into the file; it never holds the object in memory.
                client.download_fileobj(self.bucket, key, sink, Config=self.transfer_config)
                if sink.tell() != size:
                    raise TransportError(
                        f"{self.system}: download of '{key}' was cut short: {sink.tell()} of {size} bytes"
                    )
        except _S3_ERRORS as exc:
            raise TransportError(f"{self.system}: download of '{key}' failed: {self._describe(exc)}") from None

    def move(self, folder: str, name: str, to_folder: str, new_name: str | None = None) -> None:
        source = self._key(folder, name)
        target = self._key(to_folder, name if new_name is None else new_name)
        if source == target:
            return  # copy-then-delete onto itself would delete the file
        client = self._boto_client()
        try:
            # S3 has no rename: a (managed, multipart above the threshold) server-side copy, then delete.
            client.copy({"Bucket": self.bucket, "Key": source}, self.bucket, target, Config=self.transfer_config)
        except _S3_ERRORS as exc:
            raise TransportError(
                f"{self.system}: could not move '{source}' to '{target}': {self._describe(exc)}"
            ) from None
        try:
            client.delete_object(Bucket=self.bucket, Key=source)
        except _S3_ERRORS as exc:
            raise TransportError(
                f"{self.system}: copied '{source}' to '{target}' but could not delete the original: "
                f"{self._describe(exc)}"
            ) from None

    def write_text(self, folder: str, name: str, text: str) -> None:
        key = self._key(folder, name)
        try:
            # One PUT: the object appears complete or not at all.
            self._boto_client().put_object(
                Bucket=self.bucket, Key=key, Body=text.encode("utf-8"), ContentType="text/plain; charset=utf-8"
            )
        except _S3_ERRORS as exc:
            raise TransportError(f"{self.system}: could not write '{key}': {self._describe(exc)}") from None

    # ------------------------------------------------------------------------------------------------
    # The storage archive's side (`storage.Archive`): whole folders of the storage kept under the prefix

    def put_file(self, local_path: Path, folder: str, name: str) -> str:
        """Upload `local_path` as `folder/name`; returns the object's URI."""
        key = self._key(folder, name)
        try:
            self._boto_client().upload_file(str(local_path), self.bucket, key, Config=self.transfer_config)
        except (S3UploadFailedError, ClientError, BotoCoreError, OSError) as exc:
            raise TransportError(f"{self.system}: upload of '{key}' failed: {self._describe(exc)}") from None
        return f"s3://{self.bucket}/{key}"

    def list_tree(self, folder: str) -> list[tuple[str, RemoteFile]]:
        """Every object under `folder`, at any depth: (its folder relative to `folder`, the file), sorted."""
        parts = self._parts(folder)
        prefix = "/".join(parts) + "/" if parts else ""
        found: list[tuple[str, RemoteFile]] = []
        try:
            for page in (
                self._boto_client().get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix)
            ):
                for entry in page.get("Contents", []):
                    below, _, name = entry["Key"][len(prefix) :].rpartition("/")
                    if name:
                        modified = entry["LastModified"].astimezone(UTC)
                        found.append((below, RemoteFile(name=name, size=entry["Size"], modified=modified)))
        except _S3_ERRORS as exc:
            raise TransportError(f"{self.system}: cannot list '{prefix}': {self._describe(exc)}") from None
        return sorted(found, key=lambda item: (item[0], item[1].name))

    def exists(self, folder: str, name: str) -> bool:
        key = self._key(folder, name)
        try:
            self._boto_client().head_object(Bucket=self.bucket, Key=key)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                return False
            raise TransportError(f"{self.system}: cannot look up '{key}': {self._describe(exc)}") from None
        except _S3_ERRORS as exc:
            raise TransportError(f"{self.system}: cannot look up '{key}': {self._describe(exc)}") from None
        return True

    def delete(self, folder: str, name: str) -> None:
        """Remove `folder/name` (nothing happens when it is not there)."""
        key = self._key(folder, name)
        try:
            self._boto_client().delete_object(Bucket=self.bucket, Key=key)
        except _S3_ERRORS as exc:
            raise TransportError(f"{self.system}: could not delete '{key}': {self._describe(exc)}") from None

    def _parts(self, folder: str) -> list[str]:
        return folder_parts(self.prefix, self.system) + folder_parts(folder, self.system)

    def _key(self, folder: str, name: str) -> str:
        check_source_name(name, self.system)
        return "/".join([*self._parts(folder), name])

    def _boto_client(self) -> Any:
        if self._client is None:
            session = boto3.session.Session(
                aws_access_key_id=self._access_key_id,
                aws_secret_access_key=self._secret_access_key,
                region_name=self.region,
            )
            config = Config(
                connect_timeout=self.timeout_seconds,
                read_timeout=self.timeout_seconds,
                retries={"max_attempts": self.max_attempts, "mode": "standard"},
                # S3-compatible stores (MinIO, Ceph, moto) are usually reached by IP or a single host name,
                # where virtual-hosted bucket names do not resolve.
                s3={"addressing_style": "path"} if self.endpoint_url else None,
            )
            self._client = session.client("s3", endpoint_url=self.endpoint_url, config=config)
        return self._client

    def _describe(self, exc: BaseException) -> str:
        # S3UploadFailedError wraps the ClientError; its code and message say what went wrong.
        cause = exc.__context__ if isinstance(exc, S3UploadFailedError) and exc.__context__ else exc
        if isinstance(cause, ClientError):
            error = cause.response.get("Error", {})
            text = f"{error.get('Code', 'error')}: {error.get('Message', '')}".rstrip(": ")
        elif isinstance(cause, OSError) and cause.strerror:
            text = cause.strerror
        else:
            text = str(exc)
        return redact(text, [self._secret_access_key, self._access_key_id])

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None
