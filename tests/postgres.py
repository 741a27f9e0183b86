"""A real PostgreSQL server for tests, used by the session fixture ``postgres_url`` in conftest.py.

Finds ``initdb``/``pg_ctl`` on PATH or under /usr/lib/postgresql/*/bin (the Debian ``postgresql`` package, which
``make test`` installs with the other SYSTEM_PACKAGES of the Makefile); nothing is installed here. The cluster lives
in a temporary folder owned by the ``postgres`` user when the tests run as root (the server refuses to run as
root), listens on 127.0.0.1 only, on a free port, with trust authentication and no fsync; it is stopped and deleted
at the end of the session. ``start_server`` says why when no server can start, and the fixture skips with that.
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
        self.url = ""
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
        """initdb, start, create the database; returns (and keeps as ``url``) the database URL."""
        self._run("initdb", "-D", str(self.data), "-U", "postgres", "-A", "trust", "-E", "UTF8", "--locale=C",
                  "--no-sync")
        options = (f"-c listen_addresses=127.0.0.1 -p {self.port} -c unix_socket_directories={self.root} "
                   "-c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=40")
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.root / "server.log"), "-w", "-t", "60",
                  "-o", options, "start")
        self._run("createdb", "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", DATABASE)
        self.url = f"postgresql+psycopg2://postgres@127.0.0.1:{self.port}/{DATABASE}"
        return self.url

    def stop(self) -> None:
        try:
            if (self.data / "postmaster.pid").exists():
                self._run("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "stop")
        finally:
            shutil.rmtree(self.root, ignore_errors=True)


def start_server() -> tuple[PostgresServer | None, str]:
    """(a started server, "") or (None, why no server could start)."""
    bin_dir = _bin_dir()
    if bin_dir is None:
        return None, ("PostgreSQL is not installed (no initdb/pg_ctl on PATH or under /usr/lib/postgresql): "
                      "install the Debian package postgresql (`make system-packages` as root)")
    if os.geteuid() == 0:
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            return None, "running as root and there is no 'postgres' user to run the server as"
    server = PostgresServer(bin_dir)
    try:
        server.start()
    except (RuntimeError, OSError, subprocess.SubprocessError) as err:
        try:
            server.stop()
        except (RuntimeError, OSError, subprocess.SubprocessError):
            pass
        first_line = (str(err).strip().splitlines() or [repr(err)])[0]
        return None, f"PostgreSQL server could not start: {first_line}"
    return server, ""
