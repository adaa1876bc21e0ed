"""An S3-compatible server (moto in server mode) on loopback, and a TCP proxy that cuts large requests.

moto keeps its state in this process, so `client()` reads back what an upload wrote. The proxy makes a
multipart upload fail honestly: every connection that carries more than `max_bytes` towards the server is
cut, which kills part uploads and lets the small calls (create, abort, list) through.
"""

from __future__ import annotations

import logging
import socket
import threading
from typing import Any

import boto3
from botocore.config import Config
from moto.server import ThreadedMotoServer

from connector_pipelines_tests.servers import LOOPBACK


class S3TestServer:
    """moto's S3 on a free loopback port with `bucket` created; `endpoint_url` is where to send requests."""

    def __init__(
        self,
        bucket: str = "extracts-test",
        access_key_id: str = "AKIATESTEXTRACTS8F3D",
        secret_access_key: str = "sk-s3-5e7a91c0d4b2",
        region: str = "us-east-1",
    ):
        self.bucket = bucket
        self.access_key_id = access_key_id
        self.secret_access_key = secret_access_key
        self.region = region
        self.host = LOOPBACK
        self.port = 0
        self._server = ThreadedMotoServer(ip_address=LOOPBACK, port=0, verbose=False)

    @property
    def endpoint_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def client(self) -> Any:
        """A boto3 client straight to the server, to read objects back."""
        return boto3.client(
            "s3",
            endpoint_url=self.endpoint_url,
            region_name=self.region,
            aws_access_key_id=self.access_key_id,
            aws_secret_access_key=self.secret_access_key,
            config=Config(s3={"addressing_style": "path"}),
        )

    def connection(self, extra: dict[str, Any] | None = None) -> dict[str, Any]:
        """The connections.yaml entry for this server; `extra` overrides, None drops a key."""
        entry: dict[str, Any] = {
            "type": "s3",
            "bucket": self.bucket,
            "region": self.region,
            "endpoint_url": self.endpoint_url,
            "access_key_id": "${TEST_S3_ACCESS_KEY_ID}",
            "secret_access_key": "${TEST_S3_SECRET_ACCESS_KEY}",
        }
        entry.update(extra or {})
        return {key: value for key, value in entry.items() if value is not None}

    def env(self) -> dict[str, str]:
        return {"TEST_S3_ACCESS_KEY_ID": self.access_key_id, "TEST_S3_SECRET_ACCESS_KEY": self.secret_access_key}

    def client_kwargs(self, **overrides: Any) -> dict[str, Any]:
        """Resolved values for `S3Client(**...)`."""
        values: dict[str, Any] = {
            "bucket": self.bucket,
            "region": self.region,
            "endpoint_url": self.endpoint_url,
            "access_key_id": self.access_key_id,
            "secret_access_key": self.secret_access_key,
            "timeout_seconds": 10,
        }
        values.update(overrides)
        return values

    def start(self) -> S3TestServer:
        # moto's server logs every request through werkzeug at INFO.
        logging.getLogger("werkzeug").setLevel(logging.WARNING)
        self._server.start()
        self.host, self.port = self._server.get_host_and_port()
        self.client().create_bucket(Bucket=self.bucket)
        return self

    def stop(self) -> None:
        if self.port:
            self._server.stop()
            self.port = 0

    def __enter__(self) -> S3TestServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


class CuttingProxy:
    """A loopback TCP proxy to `target` that cuts any connection once it has carried `max_bytes` upstream.

    `cuts` counts the connections it cut. It serves until `stop()`; each connection uses two short-lived
    threads.
    """

    def __init__(self, target_host: str, target_port: int, max_bytes: int):
        self.target = (target_host, target_port)
        self.max_bytes = max_bytes
        self.cuts = 0
        self._lock = threading.Lock()
        self._listener = socket.create_server((LOOPBACK, 0))
        self._listener.settimeout(0.1)
        self.port = self._listener.getsockname()[1]
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._accept, name="cutting-proxy", daemon=True)
        self._open: set[socket.socket] = set()

    @property
    def endpoint_url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    def _accept(self) -> None:
        while not self._stopping.is_set():
            try:
                downstream, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.target, timeout=10)
            except OSError:
                downstream.close()
                continue
            with self._lock:
                self._open |= {downstream, upstream}
            threading.Thread(target=self._pump, args=(downstream, upstream, True), daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, downstream, False), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket, upstream: bool) -> None:
        carried = 0
        try:
            source.settimeout(None)
            while data := source.recv(65536):
                carried += len(data)
                if upstream and carried > self.max_bytes:
                    with self._lock:
                        self.cuts += 1
                    break
                sink.sendall(data)
        except OSError:
            pass
        finally:
            self._close(source, sink)

    def _close(self, *sockets: socket.socket) -> None:
        for sock in sockets:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            sock.close()
            with self._lock:
                self._open.discard(sock)

    def start(self) -> CuttingProxy:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        self._thread.join(5)
        self._listener.close()
        with self._lock:
            remaining = list(self._open)
        self._close(*remaining)

    def __enter__(self) -> CuttingProxy:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
