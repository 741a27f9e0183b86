"""A real PostgreSQL server for tests: the session fixture ``postgres_url``.

Finds ``initdb``/``pg_ctl`` on PATH or under /usr/lib/postgresql/*/bin; when they are missing and apt-get is
there (as root) it installs the Debian ``postgresql`` package (the Makefile's SYSTEM_PACKAGES has it). The
cluster lives in a temporary folder owned by the ``postgres`` user when the tests run as root (the server
refuses to run as root), listens on 127.0.0.1 only, on a free port, with trust authentication and no fsync;
it is stopped and deleted at the end of the session. Skips only when there are neither binaries nor apt.

    from postgres import postgres_url  # noqa: F401  (then ask for the fixture in a test)
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

import pytest

DATABASE = "whisperkd_test"


def _bin_dir() -> Path | None:
    found = shutil.which("initdb"), shutil.which("pg_ctl")
    if all(found):
        return Path(os.path.realpath(found[0])).parent
    versions = sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: int(Path(p).parent.name) if
                      Path(p).parent.name.isdigit() else 0)
    for folder in reversed(versions):
        if (Path(folder) / "initdb").is_file() and (Path(folder) / "pg_ctl").is_file():
            return Path(folder)
    return None


def _install() -> None:
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    command = ["apt-get", "install", "-y", "-q", "--no-install-recommends", "postgresql"]
    if subprocess.run(command, env=env, capture_output=True).returncode != 0:
        subprocess.run(["apt-get", "update", "-q"], env=env, capture_output=True, check=True)
        subprocess.run(command, env=env, capture_output=True, check=True)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PostgresServer:
    """initdb + pg_ctl start in a fresh folder; ``url`` is an SQLAlchemy URL of an empty database."""

    def __init__(self, bin_dir: Path):
        self.bin_dir = bin_dir
        self.root = Path(tempfile.mkdtemp(prefix="whisperkd-pg-"))
        self.data = self.root / "data"
        self.port = _free_port()
        self.as_user: list[str] = []
        if os.geteuid() == 0:
            user = pwd.getpwnam("postgres")  # created by the Debian package
            os.chown(self.root, user.pw_uid, user.pw_gid)
            self.as_user = (["runuser", "-u", "postgres", "--"] if shutil.which("runuser") else
                            ["su", "postgres", "-s", "/bin/sh", "-c"])

    def _run(self, *args: str) -> None:
        command = [str(self.bin_dir / args[0]), *args[1:]]
        if self.as_user and self.as_user[0] == "su":
            command = [*self.as_user, " ".join(f"'{a}'" for a in command)]
        else:
            command = [*self.as_user, *command]
        done = subprocess.run(command, capture_output=True, text=True, cwd=self.root, timeout=120)
        if done.returncode != 0:
            log = (self.root / "server.log").read_text() if (self.root / "server.log").exists() else ""
            raise RuntimeError(f"{' '.join(args[:2])} failed: {done.stdout}{done.stderr}{log}")

    def start(self) -> str:
        self._run("initdb", "-D", str(self.data), "-U", "postgres", "-A", "trust", "-E", "UTF8", "--locale=C",
                  "--no-sync")
        options = (f"-c listen_addresses=127.0.0.1 -p {self.port} -c unix_socket_directories={self.root} "
                   "-c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=40")
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.root / "server.log"), "-w", "-t", "60",
                  "-o", options, "start")
        self._run("createdb", "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", DATABASE)
        return f"postgresql+psycopg2://postgres@127.0.0.1:{self.port}/{DATABASE}"

    def stop(self) -> None:
        try:
            if (self.data / "postmaster.pid").exists():
                self._run("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "stop")
        finally:
            shutil.rmtree(self.root, ignore_errors=True)


@pytest.fixture(scope="session")
def postgres_url():
    """The URL of an empty database on a PostgreSQL server of this session (skips only without binaries or apt)."""
    pytest.importorskip("psycopg2", reason="psycopg2 is not installed (pip install 'whisperkd[postgres]')")
    bin_dir = _bin_dir()
    if bin_dir is None:
        if not (shutil.which("apt-get") and os.geteuid() == 0):
            pytest.skip("PostgreSQL is not installed (no initdb/pg_ctl) and apt-get is not available as root")
        _install()
        bin_dir = _bin_dir()
        assert bin_dir is not None, "apt-get installed postgresql but no initdb/pg_ctl was found"
    server = PostgresServer(bin_dir)
    try:
        yield server.start()
    finally:
        server.stop()
