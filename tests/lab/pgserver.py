"""A real PostgreSQL server for the history tests: Debian's postgresql, initdb into a temporary
directory and pg_ctl on a free port, as the unprivileged `postgres` user when the tests run as
root (PostgreSQL refuses to run as root).

Connections over TCP need a password (scram-sha-256), so wrong credentials can be tested; the
superuser is `edgepack` with PASSWORD. Each test gets a database of its own (`database()`).
"""

from __future__ import annotations

import glob
import os
import shutil
import signal
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

from edgepack.devices.virtual.harness import free_port

USER = "edgepack"
PASSWORD = "s3cret-pw"


def pg_bin(name: str) -> str | None:
    """Debian keeps the server's programs off PATH, under /usr/lib/postgresql/VERSION/bin."""
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"),
                   key=lambda p: int(Path(p).parts[4]) if Path(p).parts[4].isdigit() else 0)
    return found[-1] if found else shutil.which(name)


class PgServer:
    def __init__(self) -> None:
        self.initdb = pg_bin("initdb")
        self.pg_ctl = pg_bin("pg_ctl")
        if self.initdb is None or self.pg_ctl is None:
            raise FileNotFoundError("PostgreSQL's initdb/pg_ctl (apt-get install postgresql)")
        self.as_postgres = os.geteuid() == 0
        # Not under pytest's tmp dirs: they are 0700 root, which the postgres user cannot enter.
        self.dir = Path(tempfile.mkdtemp(prefix="edgepack-pg-"))
        self.data = self.dir / "data"
        self.port = free_port()
        self.pid: int | None = None

    def _run(self, *args: str) -> subprocess.CompletedProcess[str]:
        cmd = (["runuser", "-u", "postgres", "--"] if self.as_postgres else []) + list(args)
        return subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=True)

    def init(self) -> PgServer:
        pwfile = self.dir / "pw"
        pwfile.write_text(PASSWORD + "\n")
        if self.as_postgres:
            shutil.chown(self.dir, "postgres", "postgres")
            shutil.chown(pwfile, "postgres", "postgres")
        self._run(self.initdb, "-D", str(self.data), "-U", USER, "--auth-local=trust",
                  "--auth-host=scram-sha-256", f"--pwfile={pwfile}", "-E", "UTF8",
                  "--no-sync")
        return self

    def start(self) -> PgServer:
        opts = (f"-p {self.port} -c listen_addresses=127.0.0.1 "
                f"-c unix_socket_directories={self.dir} -c fsync=off -c max_connections=60")
        self._run(self.pg_ctl, "-D", str(self.data), "-l", str(self.dir / "server.log"),
                  "-o", opts, "-w", "-t", "60", "start")
        self.pid = int((self.data / "postmaster.pid").read_text().split()[0])
        return self

    def stop(self) -> None:
        """Fast shutdown, by the postmaster's pid: its clients' connections are cut."""
        if self.pid is None:
            return
        try:
            os.kill(self.pid, signal.SIGINT)
        except ProcessLookupError:
            self.pid = None
            return
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                os.kill(self.pid, 0)
            except ProcessLookupError:
                break
            time.sleep(0.05)
        self.pid = None

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)

    def url(self, database: str = "postgres", user: str = USER,
            password: str | None = PASSWORD) -> str:
        auth = f"{user}:{password}" if password is not None else user
        return f"postgresql://{auth}@127.0.0.1:{self.port}/{database}"

    def database(self) -> str:
        """A new, empty database; its URL."""
        import psycopg

        name = "t_" + uuid.uuid4().hex[:12]
        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {name}")
        return self.url(name)
