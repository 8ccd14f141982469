"""The history on disk: a SQLite file (the standard library's) that mirrors the in-memory history, so
it survives a restart and a `kill -9`.

Nothing touches the file on the per-message path. Every `flush_interval` the loop takes the changes
from the in-memory `History` (list copies of what arrived, and per topic the number below which
messages were dropped) and a worker thread writes them in one transaction. WAL mode with
`synchronous=NORMAL`: a committed transaction survives the process being killed, and SQLite never
leaves a half-written one, so a crash loses at most what arrived since the last flush and the file
is never corrupt. (A power cut may also lose the last transactions, not the file.)

Queries are answered from memory, which holds the same messages; the file is read once, at start-up.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
import time
from array import array
from pathlib import Path
from typing import Any

import anyio

from mcpmqtt.errors import ConfigError
from mcpmqtt.mqtt import PublishProperties
from mcpmqtt.server.history_store import Changes, Entry, History

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1
"""Stored in the file's `user_version`; a file of another version is refused, not rewritten."""

# One row per topic per flush (a chunk of its messages in packed arrays), not one per message: the
# writer thread then holds the GIL for a few C-level joins per topic instead of binding every message,
# which is what slowed the event loop's ingest (0.40x of the live state alone with a row per message,
# bench/bench_history.py). `kept` holds, per topic, the first message number still kept, so that a
# chunk partly older than that (the history dropped its first messages) is read back without them.
_SCHEMA = (
    """CREATE TABLE chunk (
        topic TEXT NOT NULL,
        first_seq INTEGER NOT NULL,
        count INTEGER NOT NULL,
        times BLOB NOT NULL,     -- float64 per message, machine order
        sizes BLOB NOT NULL,     -- uint32 payload length per message
        payloads BLOB NOT NULL,  -- the payloads, one after another
        flags BLOB NOT NULL,     -- a byte per message: qos | retain << 2
        properties TEXT,         -- null, or a JSON list with each message's properties or null
        PRIMARY KEY (topic, first_seq)
    ) WITHOUT ROWID""",
    "CREATE TABLE kept (topic TEXT PRIMARY KEY, first_seq INTEGER NOT NULL) WITHOUT ROWID",
)


def _properties_data(props: PublishProperties | None) -> dict[str, Any] | None:
    if props is None:
        return None
    return {
        "content_type": props.content_type,
        "response_topic": props.response_topic,
        "correlation_data": props.correlation_data.hex() if props.correlation_data is not None else None,
        "user_properties": props.user_properties,
        "message_expiry_interval": props.message_expiry_interval,
    }


def _properties(data: dict[str, Any] | None) -> PublishProperties | None:
    if data is None:
        return None
    correlation = data["correlation_data"]
    return PublishProperties(
        content_type=data["content_type"],
        response_topic=data["response_topic"],
        correlation_data=bytes.fromhex(correlation) if correlation is not None else None,
        user_properties=tuple((key, value) for key, value in data["user_properties"]),
        message_expiry_interval=data["message_expiry_interval"],
    )


def _chunk(row: tuple[str, int, list[Entry]]) -> tuple[object, ...]:
    """One topic's new messages as one row: packed arrays, C-level work but for the flags."""
    topic, start, entries = row
    times, payloads, qos, retain, props = zip(*entries, strict=True)
    flags = bytes([q | (4 if r else 0) for q, r in zip(qos, retain, strict=True)])
    listed = None
    if any(p is not None for p in props):
        listed = json.dumps([_properties_data(p) for p in props])
    sizes = array("I", map(len, payloads))
    packed = array("d", times).tobytes(), sizes.tobytes(), b"".join(payloads)
    return (topic, start, len(entries), *packed, flags, listed)


class HistoryFile:
    """One SQLite history file, written by the loop's worker threads one flush at a time."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.written = 0
        """Messages written since the file was opened."""
        self._failing = False
        # A flush cancelled at shutdown goes on in its thread while the last flush starts: the lock
        # makes the last one wait, where two transactions on one connection would fail.
        self._lock = threading.Lock()
        self._db = self._open(path)

    @staticmethod
    def _open(path: Path) -> sqlite3.Connection:
        """Open or create the file; ConfigError naming it if it cannot be the history."""

        def refuse(why: str) -> ConfigError:
            return ConfigError(f"history.path: cannot keep the history in {path}: {why}")

        try:
            db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        except sqlite3.Error as exc:
            raise refuse(f"{exc} (is its folder there and writable?)") from None
        try:
            version = db.execute("PRAGMA user_version").fetchone()[0]
            tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
            if version > SCHEMA_VERSION:
                raise refuse(
                    f"it was written by a newer mcpmqtt (history schema {version}, this one knows "
                    f"{SCHEMA_VERSION}); upgrade, or give another path"
                )
            if version == 0 and tables:
                raise refuse(
                    "it is a SQLite database of something else (it has tables but no mcpmqtt history); "
                    "give a path of its own"
                )
            # WAL needs write access to the file and its folder: a read-only one fails here, at start-up.
            db.execute("PRAGMA journal_mode = WAL")
            db.execute("PRAGMA synchronous = NORMAL")
            if version == 0:
                with db:
                    db.execute("BEGIN IMMEDIATE")
                    for statement in _SCHEMA:
                        db.execute(statement)
                    db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            else:  # a read-only file in WAL mode passed the line above without writing: write now
                db.execute("BEGIN IMMEDIATE")
                db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
                db.execute("COMMIT")
        except sqlite3.DatabaseError as exc:
            db.close()
            hint = {
                "file is not a database": " (it is not a SQLite file; give another path)",
                "attempt to write a readonly database": " (make the file and its folder writable)",
            }.get(str(exc), "")
            raise refuse(f"{exc}{hint}") from None
        except ConfigError:
            db.close()
            raise
        return db

    def rows(self) -> list[tuple[str, int, Entry]]:
        """Every stored message as (topic, seq, entry), in the order they arrived."""
        kept = dict(self._db.execute("SELECT topic, first_seq FROM kept"))
        found: list[tuple[float, str, int, Entry]] = []
        query = "SELECT topic, first_seq, count, times, sizes, payloads, flags, properties FROM chunk"
        for topic, first_seq, count, times, sizes, payloads, flags, props in self._db.execute(query):
            moments, lengths = array("d", times), array("I", sizes)
            if len(moments) != count or len(lengths) != count or len(flags) != count:
                continue  # not written by this schema's writer; never by ours
            listed = json.loads(props) if props is not None else [None] * count
            start, offset = kept.get(topic, 0), 0
            for index in range(count):
                end = offset + lengths[index]
                if first_seq + index >= start:
                    flag = flags[index]
                    at = moments[index]
                    entry = (at, payloads[offset:end], flag & 3, bool(flag & 4), _properties(listed[index]))
                    found.append((at, topic, first_seq + index, entry))
                offset = end
        found.sort(key=lambda row: (row[0], row[1], row[2]))
        return [(topic, seq, entry) for _, topic, seq, entry in found]

    def write(self, changes: Changes) -> None:
        """Apply one flush in one transaction (in a worker thread). A failure is logged and the flush's
        changes are lost from the file (memory keeps them); the next flush tries again."""
        with self._lock:
            self._write(changes)

    def _write(self, changes: Changes) -> None:
        trims = list(changes.trims.items())
        try:
            with self._db:
                self._db.execute("BEGIN")
                self._db.executemany("DELETE FROM chunk WHERE topic = ? AND first_seq + count <= ?", trims)
                self._db.executemany("INSERT OR REPLACE INTO kept VALUES (?, ?)", trims)
                self._db.executemany(  # a topic forgotten: no need to remember where it stopped
                    "DELETE FROM kept WHERE topic = ?1 AND NOT EXISTS (SELECT 1 FROM chunk WHERE topic = ?1)",
                    ((topic,) for topic, _ in trims),
                )
                self._db.executemany(
                    "INSERT OR REPLACE INTO chunk VALUES (?, ?, ?, ?, ?, ?, ?, ?)", map(_chunk, changes.rows)
                )
            self.written += sum(len(entries) for _, _, entries in changes.rows)
            if self._failing:
                log.warning("the history file %s is written again", self.path)
                self._failing = False
        except sqlite3.Error as exc:
            if not self._failing:
                log.error("cannot write the history file %s: %s; retrying at the next flush", self.path, exc)
                self._failing = True

    def close(self) -> None:
        with self._lock:
            self._db.close()


def open_history_file(history: History, path: Path) -> HistoryFile:
    """Open the file and refill `history` from it, the bounds applied (at start-up, before serving)."""
    store = HistoryFile(path.expanduser())
    started = time.monotonic()
    try:
        rows = store.rows()
    except sqlite3.Error as exc:  # e.g. the schema's version number on a file of other tables
        store.close()
        raise ConfigError(f"history.path: cannot read the history in {store.path}: {exc}") from None
    history.restore(rows)
    history.expire(time.time())
    log.info(
        "history: %d messages of %d topics loaded from %s in %.2f s",
        history.messages,
        len(history),
        store.path,
        time.monotonic() - started,
    )
    return store


async def keep_written(history: History, store: HistoryFile, interval: float) -> None:
    """Flush the history's changes to the file every `interval` seconds, until cancelled; then the
    caller calls `flush` once more."""
    while True:
        await anyio.sleep(interval)
        await flush(history, store)


async def flush(history: History, store: HistoryFile) -> None:
    """Write what changed since the last flush, in a worker thread."""
    history.expire(time.time())
    changes = history.take_changes()
    if changes:
        await anyio.to_thread.run_sync(store.write, changes)
