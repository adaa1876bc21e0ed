"""A file exchange for the tests: a project folder with partners.yaml, `serve-files` started as a real subprocess
on a free loopback port, and OpenSSH's `sftp` as the partner's client (key auth, or password auth through
SSH_ASKPASS, which needs no sshpass), always with StrictHostKeyChecking=yes against the printed host key."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import yaml

from connector_pipelines.storage import STORAGE_ENV
from connector_pipelines_tests.servers import LOOPBACK, free_port

_START_TIMEOUT = 30


def partner_entry(name: str, **fields: Any) -> dict:
    return {"name": name, "methods": ["sftp"], "allowed_networks": ["127.0.0.0/8"], **fields}


class FileExchange:
    """`root/resources/{connections,partners}.yaml`, the storage under `root/storage`, `serve-files` on demand."""

    def __init__(
        self,
        root: Path,
        partners: list[dict],
        connections: dict | None = {},  # noqa: B006 - never changed
        email_connection: str | None = None,
    ):
        self.root = root
        self.resources = root / "resources"
        self.storage = root / "storage"
        self.partners = partners
        self.connections = connections
        self.email_connection = email_connection
        self.process: subprocess.Popen | None = None
        self.port = 0
        self.host_key = ""
        self.fingerprint = ""
        self.ftps_port = 0
        self.ftps_fingerprint = ""
        self.log_path = root / "serve-files.log"
        self.write()

    def write(self) -> None:
        (self.resources / "connectors").mkdir(parents=True, exist_ok=True)
        if self.connections is not None:  # None: a project builder of the tests writes it
            (self.resources / "connections.yaml").write_text(yaml.safe_dump({"connections": self.connections}))
        settings = {"email_connection": self.email_connection} if self.email_connection else {}
        (self.resources / "partners.yaml").write_text(yaml.safe_dump({**settings, "partners": self.partners}))

    @property
    def env(self) -> dict[str, str]:
        return {**os.environ, STORAGE_ENV: str(self.storage)}

    def cli(self, *args: str) -> subprocess.CompletedProcess:
        """`connector-pipelines ARGS --resources ...` as a subprocess."""
        command = [sys.executable, "-m", "connector_pipelines.cli", *args, "--resources", str(self.resources)]
        return subprocess.run(command, env=self.env, capture_output=True, text=True, timeout=120)

    def add_password(self, partner: str) -> str:
        done = self.cli("partners", "add", partner)
        assert done.returncode == 0, done.stderr
        return done.stdout.strip().splitlines()[-1]

    def add_key(self, partner: str) -> Path:
        """A new ed25519 key pair for the partner (ssh-keygen), its public key registered; the private key's path."""
        key = self.root / f"{partner}_key"
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
        done = self.cli("partners", "add", partner, "--ssh-key", str(key) + ".pub")
        assert done.returncode == 0, done.stderr
        return key

    # ---- the server ----------------------------------------------------------------------------------------

    def start(self, *extra: str) -> FileExchange:
        self.port = free_port()
        command = [
            sys.executable,
            "-m",
            "connector_pipelines.cli",
            "serve-files",
            "--sftp-host",
            LOOPBACK,
            "--sftp-port",
            str(self.port),
            *extra,
            "--resources",
            str(self.resources),
        ]
        log = self.log_path.open("a")
        self.process = subprocess.Popen(command, env=self.env, stdout=subprocess.PIPE, stderr=log, text=True)
        deadline = time.monotonic() + _START_TIMEOUT
        lines = []
        while time.monotonic() < deadline:
            line = self.process.stdout.readline()
            if not line:
                break
            lines.append(line.strip())
            if line.startswith("sftp host key: "):
                self.host_key = line.removeprefix("sftp host key: ").strip()
            if line.startswith("sftp host key fingerprint: "):
                self.fingerprint = line.removeprefix("sftp host key fingerprint: ").strip()
            if line.startswith("ftps: listening on "):
                self.ftps_port = int(line.split()[3].rsplit(":", 1)[1])
            if line.startswith("ftps certificate sha256 fingerprint: "):
                self.ftps_fingerprint = line.split(": ", 1)[1].strip()
            if line.strip() == "ready":
                self.banner = lines
                return self
        self.stop()
        raise AssertionError(f"serve-files did not start: {lines}; log: {self.log()}")

    def stop(self) -> None:
        if self.process is not None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
            self.process.stdout.close()
            self.process = None

    def log(self) -> str:
        return self.log_path.read_text() if self.log_path.exists() else ""

    def known_hosts(self) -> Path:
        """A known_hosts file holding the host key serve-files printed, for this port only."""
        path = self.root / "known_hosts"
        path.write_text(f"[{LOOPBACK}]:{self.port} {self.host_key}\n")
        return path

    # ---- a partner's client --------------------------------------------------------------------------------

    def sftp(
        self,
        partner: str,
        commands: list[str],
        *,
        key: Path | None = None,
        password: str | None = None,
        cwd: Path | None = None,
    ) -> subprocess.CompletedProcess:
        """OpenSSH's `sftp -b` running `commands` (a leading '-' lets a command fail without ending the batch)."""
        batch = self.root / "batch.txt"
        batch.write_text("\n".join(commands) + "\n")
        options = ["-o", "StrictHostKeyChecking=yes", "-o", f"UserKnownHostsFile={self.known_hosts()}"]
        options += ["-o", "GlobalKnownHostsFile=/dev/null", "-o", "ConnectTimeout=10", "-F", "/dev/null"]
        env = dict(os.environ)
        if key is not None:
            options += ["-o", "IdentitiesOnly=yes", "-o", "PasswordAuthentication=no", "-i", str(key)]
        else:
            # BatchMode=no before -b (the first value wins): sftp -b would otherwise forbid the password prompt,
            # which SSH_ASKPASS answers instead of a terminal.
            askpass = self.root / "askpass.sh"
            askpass.write_text('#!/bin/sh\nprintf "%s\\n" "$TEST_PARTNER_PASSWORD"\n')
            askpass.chmod(0o700)
            options = ["-o", "BatchMode=no", *options, "-o", "PubkeyAuthentication=no"]
            options += ["-o", "PreferredAuthentications=password", "-o", "NumberOfPasswordPrompts=1"]
            env |= {"SSH_ASKPASS": str(askpass), "SSH_ASKPASS_REQUIRE": "force", "TEST_PARTNER_PASSWORD": password}
        command = ["sftp", *options, "-b", str(batch), "-P", str(self.port), f"{partner}@{LOOPBACK}"]
        return subprocess.run(
            command, cwd=cwd or self.root, env=env, capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL
        )

    def folder(self, partner: str, name: str) -> Path:
        return self.storage / "partners" / partner / name

    @property
    def ftps_certificate(self) -> Path:
        return self.storage / "partners" / ".server" / "ftps-cert.pem"
