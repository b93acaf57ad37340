"""A throw-away PostgreSQL cluster in a temporary folder, for the tests of studies shared by
several workers (tests/conftest.py's `postgres_url` fixture): pytest-postgresql's executor
around the server's own pg_ctl (Debian's `postgresql` package; .ci/run installs it).

initdb and postgres refuse to run as root, and CI runs as root: there pg_ctl is run as the
`postgres` system user (the package creates it) through `runuser`, in a folder that user owns.
"""
from __future__ import annotations

import glob
import os
import pwd
import shutil
import stat
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

USER = DBNAME = "tuneforge"


def _version(path: str) -> tuple[int, ...]:
    """/usr/lib/postgresql/15/bin/pg_ctl -> (15,)."""
    return tuple(int(p) for p in Path(path).parents[1].name.split(".") if p.isdigit())


def find_pg_ctl() -> str | None:
    """$PG_CTL, pg_ctl on PATH, or the newest of Debian's /usr/lib/postgresql/*/bin/pg_ctl
    (not on PATH there)."""
    found = os.environ.get("PG_CTL") or shutil.which("pg_ctl")
    if found:
        return found
    debian = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"), key=_version)
    return debian[-1] if debian else None


def _as_postgres(pg_ctl: str, folder: Path) -> str:
    """A pg_ctl that runs the real one as the `postgres` user (for root), in `folder`, which
    that user is given."""
    try:
        user = pwd.getpwnam("postgres")
    except KeyError:
        raise RuntimeError("running as root, and initdb refuses root: no `postgres` user to run PostgreSQL as "
                           "(apt-get install postgresql creates it)") from None
    os.chown(folder, user.pw_uid, user.pw_gid)
    wrapper = folder / "pg_ctl-as-postgres"
    # cd: root's working folder may be closed to the postgres user
    wrapper.write_text(f'#!/bin/sh\ncd "{folder}" && exec runuser -u postgres -- "{pg_ctl}" "$@"\n')
    wrapper.chmod(wrapper.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return str(wrapper)


@contextmanager
def throwaway_cluster() -> Iterator[str]:
    """Start a new cluster (trust authentication on 127.0.0.1, a random free port), create the
    database `tuneforge`; yield its SQLAlchemy URL (psycopg 3); stop it and delete every file."""
    import port_for
    from pytest_postgresql.executors import PostgreSQLExecutor
    from pytest_postgresql.janitor import DatabaseJanitor

    pg_ctl = find_pg_ctl()
    if pg_ctl is None:
        raise RuntimeError("PostgreSQL is not installed (no pg_ctl on PATH or under /usr/lib/postgresql/*/bin): "
                           "apt-get install postgresql, or set PG_CTL")
    folder = Path(tempfile.mkdtemp(prefix="tuneforge-pg-"))  # /tmp: a path the postgres user can reach
    executor = None
    try:
        exe = _as_postgres(pg_ctl, folder) if os.geteuid() == 0 else pg_ctl
        port = port_for.select_random()
        executor = PostgreSQLExecutor(executable=exe, host="127.0.0.1", port=port, datadir=str(folder / "data"),
                                      unixsocketdir=str(folder), logfile=str(folder / "server.log"), startparams="-w",
                                      dbname=DBNAME, user=USER, timeout=60)
        executor.start()
        with DatabaseJanitor(user=USER, host="127.0.0.1", port=port, dbname=DBNAME,
                             password=None):
            yield f"postgresql+psycopg://{USER}@127.0.0.1:{port}/{DBNAME}"
    finally:
        if executor is not None and executor.running():
            executor.stop()
        shutil.rmtree(folder, ignore_errors=True)
