"""Deliver an extract file to an S3 bucket (or an S3-compatible store through `endpoint_url`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import boto3
import dagster as dg
from boto3.exceptions import S3UploadFailedError
from boto3.s3.transfer import TransferConfig
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError
from pydantic import Field

from connector_pipelines.errors import TransportError
from connector_pipelines.spec.models import FileDestination
from connector_pipelines.transports.base import UploadReceipt
from connector_pipelines.transports.folder import check_remote_name, check_resolved, folder_parts, redact

MB = 1024 * 1024
DEFAULT_MULTIPART_THRESHOLD = 64 * MB
DEFAULT_MULTIPART_CHUNKSIZE = 16 * MB


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


class S3Resource(dg.ConfigurableResource):
    """An `s3` connection as a Dagster resource; `get_client()` returns the plain `S3Client`.

    The keys are usually `dg.EnvVar("NAME")`; leave both unset to use the AWS default credential chain.
    """

    bucket: str
    prefix: str = ""
    region: str = "us-east-1"
    endpoint_url: str | None = None
    # repr=False: an initialized resource holds the resolved values, and a repr may end up in a log.
    access_key_id: str | None = Field(default=None, repr=False, description="Usually dg.EnvVar('NAME')")
    secret_access_key: str | None = Field(default=None, repr=False, description="Usually dg.EnvVar('NAME')")

    def get_client(self) -> S3Client:
        check_resolved(self, ("access_key_id", "secret_access_key"), f"s3 bucket '{self.bucket}'")
        return S3Client(
            bucket=self.bucket,
            prefix=self.prefix,
            region=self.region,
            endpoint_url=self.endpoint_url,
            access_key_id=self.access_key_id,
            secret_access_key=self.secret_access_key,
        )
