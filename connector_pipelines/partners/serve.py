"""Run the file exchange: the SFTP server (and the FTPS one, when asked) until stopped.

On start: the host key is read (or made, first time), every partner's folders exist, uploads a stopped server left
unfinished are removed, and the addresses and the host key's fingerprint are said, for partners' known_hosts.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from connector_pipelines.partners.exchange import Exchange
from connector_pipelines.partners.layout import remove_stale_uploads, server_dir
from connector_pipelines.partners.sftp import fingerprint, host_key_line, listen_sftp, load_or_create_host_key

HOST_KEY_FILE = "ssh_host_ed25519_key"


def host_key_path(storage_root: Path) -> Path:
    return server_dir(storage_root) / HOST_KEY_FILE


@dataclass(frozen=True)
class ServeOptions:
    sftp_host: str = "127.0.0.1"
    sftp_port: int = 2222
    ftps_host: str | None = None  # default: the SFTP host
    ftps_port: int | None = None  # None: no FTPS
    ftps_passive_ports: range | None = None  # None: any free port
    ftps_masquerade_address: str | None = None  # the public address given in PASV replies, behind NAT


def prepare(exchange: Exchange) -> None:
    for name in exchange.partners:
        folders = exchange.folders(name).ensure()
        removed = remove_stale_uploads(folders)
        if removed:
            logging.getLogger("connector_pipelines.partners").info(
                "partner '%s': %d unfinished upload(s) of an earlier run removed", name, removed
            )


def serve(exchange: Exchange, options: ServeOptions, say: Callable[[str], None]) -> None:
    """Serve until SIGTERM or Ctrl-C."""
    prepare(exchange)
    key = load_or_create_host_key(host_key_path(exchange.storage_root))
    asyncio.run(_serve(exchange, options, key, say))


async def _serve(exchange: Exchange, options: ServeOptions, key, say: Callable[[str], None]) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    acceptor = await listen_sftp(exchange, options.sftp_host, options.sftp_port, key)
    ftps = None
    try:
        say(f"sftp: listening on {options.sftp_host}:{acceptor.get_port()}")
        say(f"sftp host key: {host_key_line(key)}")
        say(f"sftp host key fingerprint: {fingerprint(key)}")
        if options.ftps_port is not None:
            from connector_pipelines.partners.ftps import FtpsServer

            ftps = FtpsServer(
                exchange,
                options.ftps_host or options.sftp_host,
                options.ftps_port,
                options.ftps_passive_ports,
                options.ftps_masquerade_address,
            )
            ftps.start()
            say(f"ftps: listening on {ftps.host}:{ftps.port} (explicit TLS required)")
            say(f"ftps certificate sha256 fingerprint: {ftps.fingerprint}")
        say(f"partners: {', '.join(exchange.partners) or 'none'}")
        say("ready")
        await stop.wait()
    finally:
        acceptor.close()
        await acceptor.wait_closed()
        if ftps is not None:
            ftps.stop()
