"""S3Client against moto's S3 server: single and multipart uploads, keys, and an aborted multipart upload."""

from __future__ import annotations

import hashlib

import pytest
from botocore.exceptions import ClientError

from connector_pipelines.errors import TransportError
from connector_pipelines.spec.extract import FileDestination
from connector_pipelines.transports.s3 import MB, S3Client
from connector_pipelines_tests.servers import free_port
from connector_pipelines_tests.servers.s3 import CuttingProxy

pytestmark = pytest.mark.timeout(60)


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def destination(folder: str = "") -> FileDestination:
    return FileDestination(connection="lake", folder=folder)


def read_back(s3_server, key: str) -> dict:
    return s3_server.client().get_object(Bucket=s3_server.bucket, Key=key)


def test_small_upload_lands_under_prefix_and_folder(s3_server, make_file, unique_folder):
    local = make_file("orders.csv", 3_000)
    client = S3Client(**s3_server.client_kwargs(prefix=f"/{unique_folder}/exports/"))

    receipt = client.upload(local, "orders.csv", destination("daily/2024"))
    client.close()

    key = f"{unique_folder}/exports/daily/2024/orders.csv"
    assert receipt.uri == f"s3://{s3_server.bucket}/{key}"
    obj = read_back(s3_server, key)
    assert sha256(obj["Body"].read()) == sha256(local.read_bytes())
    assert "-" not in obj["ETag"]  # a single PUT


def test_large_upload_goes_multipart(s3_server, make_file, unique_folder):
    local = make_file("big.parquet", 12 * MB)
    client = S3Client(**s3_server.client_kwargs(multipart_threshold=5 * MB, multipart_chunksize=5 * MB))

    receipt = client.upload(local, "big.parquet", destination(unique_folder))
    client.close()

    obj = read_back(s3_server, f"{unique_folder}/big.parquet")
    assert obj["ETag"].strip('"').endswith("-3")  # a multipart ETag names its part count
    assert sha256(obj["Body"].read()) == sha256(local.read_bytes())
    assert receipt.uri == f"s3://{s3_server.bucket}/{unique_folder}/big.parquet"


def test_a_failed_multipart_upload_is_aborted_and_leaves_no_object(s3_server, make_file, unique_folder):
    # The proxy cuts every connection that carries more than 1 MB: each 5 MB part dies in flight, while the
    # small calls (create, abort) pass, as on a network that drops long transfers.
    local = make_file("big.csv", 11 * MB)
    key = f"{unique_folder}/big.csv"
    with CuttingProxy(s3_server.host, s3_server.port, max_bytes=1 * MB) as proxy:
        client = S3Client(
            **s3_server.client_kwargs(
                endpoint_url=proxy.endpoint_url,
                multipart_threshold=5 * MB,
                multipart_chunksize=5 * MB,
                max_attempts=2,
            )
        )
        with pytest.raises(TransportError, match=f"s3 bucket '{s3_server.bucket}' .*upload of '{key}' failed"):
            client.upload(local, "big.csv", destination(unique_folder))
        client.close()
        assert proxy.cuts >= 1

    s3 = s3_server.client()
    with pytest.raises(ClientError, match="NoSuchKey|Not Found|404"):
        s3.head_object(Bucket=s3_server.bucket, Key=key)
    pending = s3.list_multipart_uploads(Bucket=s3_server.bucket, Prefix=unique_folder).get("Uploads", [])
    assert pending == []


@pytest.mark.parametrize("name", ["../x.csv", "a/b.csv", ".hidden"])
def test_bad_remote_names_are_refused(s3_server, make_file, unique_folder, name):
    client = S3Client(**s3_server.client_kwargs(prefix=unique_folder))
    with pytest.raises(TransportError, match="not a plain file name"):
        client.upload(make_file("x.csv", 10), name, destination())
    listed = s3_server.client().list_objects_v2(Bucket=s3_server.bucket, Prefix=unique_folder)
    assert listed["KeyCount"] == 0


def test_a_missing_bucket_is_a_transport_error_without_secrets(s3_server, make_file):
    client = S3Client(**s3_server.client_kwargs(bucket="no-such-bucket"))
    with pytest.raises(TransportError, match="NoSuchBucket") as failed:
        client.upload(make_file("x.csv", 10), "x.csv", destination())
    message = str(failed.value)
    assert s3_server.secret_access_key not in message and s3_server.access_key_id not in message
    assert failed.value.__cause__ is None


def test_an_unreachable_endpoint_is_a_transport_error(make_file):
    endpoint = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    client = S3Client(bucket="b", endpoint_url=endpoint, access_key_id="a", secret_access_key="s", max_attempts=1)
    with pytest.raises(TransportError, match="s3 bucket 'b' at http://127.0.0.1"):
        client.upload(make_file("x.csv", 10), "x.csv", destination())
