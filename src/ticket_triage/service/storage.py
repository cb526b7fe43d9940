"""Can the database store durably right now? A cheap check for intake, around every commit,
and a full one for /readyz.

SQLite keeps writing to a file that was deleted (or replaced) while it is open, and commits
succeed; the tickets are gone at the next start. So the file at the configured path must
still be the one the service opened (same device and inode). /readyz also asks for the write
lock, and that the disk has room; on PostgreSQL it runs a write statement (a read-only
server or a standby refuses it).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from sqlalchemy import Engine

from ..errors import TicketTriageError


class StorageUnavailable(TicketTriageError):
    """The database cannot store durably: answer 503, store nothing, acknowledge nothing."""


def sqlite_path(engine: Engine) -> Path | None:
    """The SQLite file behind `engine`, or None (PostgreSQL, or an in-memory database)."""
    if engine.dialect.name != "sqlite" or engine.url.database in (None, "", ":memory:"):
        return None
    return Path(engine.url.database).expanduser().resolve()


class StorageGuard:
    def __init__(self, engine: Engine, *, min_free_mb: float = 64.0) -> None:
        self.min_free_bytes = int(min_free_mb * 1024 * 1024)
        self.path = sqlite_path(engine)
        self.identity: tuple[int, int] | None = None

    def remember(self, engine: Engine) -> None:
        """Note which file is the database (call once the service has opened it)."""
        if self.path is not None:
            with engine.connect():
                st = os.stat(self.path)
            self.identity = (st.st_dev, st.st_ino)

    def check_file(self) -> None:
        """Raise StorageUnavailable if the SQLite file was deleted or replaced (one stat call)."""
        if self.path is None or self.identity is None:
            return
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            raise StorageUnavailable(
                f"the database file {self.path} is gone (deleted, or its folder was): nothing can be stored durably; "
                "restore it (or point TRIAGE_DATABASE_URL at a new one) and restart the service"
            ) from None
        if (st.st_dev, st.st_ino) != self.identity:
            raise StorageUnavailable(
                f"the database file {self.path} was replaced by another file after the service opened it: "
                "restart the service to use the new file"
            )

    def check_writable(self, engine: Engine) -> None:
        """The full check for /readyz: the file, free space, and a write transaction on `engine`."""
        self.check_file()
        if engine.dialect.name == "sqlite":
            if self.path is not None:
                self._check_free_space()
            _sqlite_write_lock(engine)
        else:
            with engine.begin() as conn:  # refused by a standby and in a read-only transaction
                conn.exec_driver_sql("UPDATE api_keys SET name = name WHERE false")

    def _check_free_space(self) -> None:
        free = shutil.disk_usage(self.path.parent).free
        if free < self.min_free_bytes:
            raise StorageUnavailable(
                f"only {free / 2**20:.0f} MiB free for the database in {self.path.parent} "
                f"(TRIAGE_MIN_FREE_DISK_MB is {self.min_free_bytes / 2**20:.0f}): free some space"
            )


def _sqlite_write_lock(engine: Engine) -> None:
    raw = engine.raw_connection()
    try:
        cur = raw.cursor()
        cur.execute("BEGIN IMMEDIATE")  # the write lock: fails on a read-only file or folder
        cur.execute("UPDATE api_keys SET name = name WHERE 0")
        cur.execute("COMMIT")
        cur.close()
    finally:
        raw.close()
