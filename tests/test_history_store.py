"""The history store: its bounds (oldest first, counted), and its SQLite file (restart, kill -9, files
that cannot be used)."""

import json
import os
import pathlib
import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from strategies import FAST

from mcpmqtt.config import ConfigError
from mcpmqtt.mqtt import PublishProperties, Received
from mcpmqtt.server.history_file import SCHEMA_VERSION, HistoryFile, open_history_file
from mcpmqtt.server.history_store import ENTRY_COST, TOPIC_COST, History

ROOT = pathlib.Path(__file__).resolve().parents[1]
T = time.time() - 1000
"""A recent time, for the file tests: opening a file drops what is older than max_age."""
BIG = 1 << 40


def message(topic: str, payload: bytes, at: float, retain: bool = False) -> Received:
    return Received(topic, payload, 0, retain, at, None)


def kept(history: History, topic_filter: str = "#") -> list[tuple[str, bytes]]:
    """Everything kept, per topic in arrival order."""
    return [
        (snapshot.topic, entry[1])
        for snapshot in history.snapshot(lambda _: True)
        for entry in snapshot.entries
    ]


# ---- bounds ------------------------------------------------------------------------------------------


def test_per_topic_bound_drops_that_topics_oldest_and_counts_it() -> None:
    history = History(2, 3600, BIG)
    for i in range(3):
        history.offer(message("a", b"%d" % i, 100 + i))
    history.offer(message("b", b"x", 104))
    assert kept(history) == [("a", b"1"), ("a", b"2"), ("b", b"x")]
    assert history.dropped == 1
    (a,) = history.snapshot(lambda topic: topic == "a")
    assert a.dropped == 1


def test_byte_bound_drops_the_oldest_message_of_all_topics_first() -> None:
    one = ENTRY_COST + 10
    history = History(100, 3600, 2 * (TOPIC_COST + 1) + 3 * one)
    for topic, at in (("a", 1), ("b", 2), ("a", 3), ("b", 4)):
        history.offer(message(topic, b"0123456789", at))
    # four messages do not fit: the oldest (a at 1) went
    assert [
        (t, e[0]) for s in history.snapshot(lambda _: True) for t, e in [(s.topic, x) for x in s.entries]
    ] == [
        ("a", 3),
        ("b", 2),
        ("b", 4),
    ]
    assert history.bytes <= history.max_bytes and history.dropped == 1


def test_byte_bound_skips_marks_of_messages_the_topic_bound_dropped() -> None:
    """The arrival FIFO still holds a mark for a message the per-topic bound dropped: the byte bound
    must skip it, not drop a newer message in its place."""
    history = History(1, 3600, BIG)
    history.offer(message("a", b"1", 1))
    history.offer(message("b", b"2", 2))
    history.offer(message("a", b"3", 3))  # drops a:1, leaving a stale mark first in the FIFO
    history.max_bytes = history.bytes - 1  # now one message must go: the oldest kept is b:2
    history.offer(message("c", b"", 4))
    assert ("b", b"2") not in kept(history) and ("a", b"3") in kept(history)


def test_age_bound_drops_what_is_older_than_max_age() -> None:
    history = History(100, 60, BIG)
    for at in (0, 30, 61, 90):
        history.offer(message("a", b"%d" % at, at))
    history.expire(100)
    assert kept(history) == [("a", b"61"), ("a", b"90")]
    assert history.dropped == 2


def test_a_topic_whose_messages_all_went_is_forgotten_and_its_bytes_freed() -> None:
    history = History(100, 60, BIG)
    history.offer(message("a", b"x", 0))
    history.offer(message("b", b"y", 100))
    history.expire(100)
    assert len(history) == 1 and history.bytes == TOPIC_COST + 1 + ENTRY_COST + 1


def test_a_replayed_retained_value_is_not_a_new_message() -> None:
    history = History(100, 3600, BIG)
    history.offer(message("a", b"on", 1, retain=True))
    history.offer(message("a", b"on", 2, retain=True))  # a re-subscription after a reconnect
    history.offer(message("a", b"on", 3))  # published again: a message
    assert [entry[0] for entry in history.snapshot(lambda _: True)[0].entries] == [1, 3]


OFFERS = st.lists(st.tuples(st.sampled_from(["a", "b", "c/d", "e"]), st.binary(max_size=40)), max_size=80)


@given(OFFERS, st.integers(min_value=1, max_value=6), st.integers(min_value=0, max_value=3000))
@FAST
def test_bounds_keep_exactly_what_dropping_the_oldest_first_keeps(
    offers: list[tuple[str, bytes]], per_topic: int, spare: int
) -> None:
    """Against a plain model: a list in arrival order, cut by the two rules as the contract words them."""
    max_bytes = TOPIC_COST * 2 + spare
    history = History(per_topic, 1e9, max_bytes)
    model: list[tuple[str, bytes]] = []
    dropped = 0
    for at, (topic, payload) in enumerate(offers):
        history.offer(message(topic, payload, at))
        model.append((topic, payload))
        mine = [i for i, (t, _) in enumerate(model) if t == topic]
        if len(mine) > per_topic:
            del model[mine[0]]
            dropped += 1

        def size() -> int:
            return sum(ENTRY_COST + len(p) for _, p in model) + sum(
                TOPIC_COST + len(t) for t in {t for t, _ in model}
            )

        while model and size() > max_bytes:
            del model[0]
            dropped += 1
        assert history.bytes == size() <= max_bytes
    assert sorted(kept(history)) == sorted(model)
    assert history.dropped == dropped
    assert history.messages == len(model)


# ---- the file ----------------------------------------------------------------------------------------


def flush_now(history: History, store: HistoryFile) -> None:
    store.write(history.take_changes())


def test_file_keeps_the_history_across_a_restart_with_its_bounds(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "history.db"
    history = History(3, 1e9, BIG, track_changes=True)
    store = open_history_file(history, path)
    props = PublishProperties(
        content_type="text/plain", correlation_data=b"\x00\x01", user_properties=(("k", "v"),)
    )
    history.offer(Received("a", b"\xff", 1, True, T + 10.0, props))
    for i in range(5):
        history.offer(message("b", b"%d" % i, T + 11 + i))
    flush_now(history, store)
    history.offer(message("b", b"5", T + 20))  # dropped b:2 as well
    flush_now(history, store)
    store.close()

    again = History(3, 1e9, BIG, track_changes=True)
    reopened = open_history_file(again, path)
    assert kept(again) == kept(history) == [("a", b"\xff"), ("b", b"3"), ("b", b"4"), ("b", b"5")]
    (a,) = again.snapshot(lambda topic: topic == "a")
    assert a.entries[0] == (T + 10.0, b"\xff", 1, True, props)
    # and it goes on numbering where it stopped: a new message is written after the old ones
    again.offer(message("b", b"6", T + 21))
    flush_now(again, reopened)
    reopened.close()
    stored = HistoryFile(path)
    assert [(seq, entry[1]) for topic, seq, entry in stored.rows() if topic == "b"] == [
        (4, b"4"),
        (5, b"5"),
        (6, b"6"),
    ]
    stored.close()


def test_file_mirrors_a_topic_forgotten_and_seen_again(tmp_path: pathlib.Path) -> None:
    history = History(100, 600, BIG, track_changes=True)
    store = open_history_file(history, tmp_path / "h.db")
    history.offer(message("a", b"old", T + 0))
    flush_now(history, store)
    history.offer(message("z", b"", T + 700))
    history.expire(T + 700)  # forgets a
    history.offer(message("a", b"new", T + 701))
    flush_now(history, store)
    store.close()
    again = History(100, 600, BIG)
    open_history_file(again, tmp_path / "h.db").close()
    assert sorted(kept(again)) == [("a", b"new"), ("z", b"")]


def test_restart_with_smaller_bounds_keeps_the_newest(tmp_path: pathlib.Path) -> None:
    history = History(100, 1e9, BIG, track_changes=True)
    store = open_history_file(history, tmp_path / "h.db")
    for i in range(10):
        history.offer(message("a", b"%d" % i, T + i))
    flush_now(history, store)
    store.close()
    small = History(4, 1e9, BIG, track_changes=True)
    store = open_history_file(small, tmp_path / "h.db")
    assert [p for _, p in kept(small)] == [b"6", b"7", b"8", b"9"]
    flush_now(small, store)  # the first flush trims the file to the new bounds
    assert [entry[1] for _, _, entry in store.rows()] == [b"6", b"7", b"8", b"9"]
    store.close()


WRITER = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from mcpmqtt.mqtt import Received
    from mcpmqtt.server.history_file import open_history_file
    from mcpmqtt.server.history_store import History

    history = History(10**9, 1e9, 1 << 40, track_changes=True)
    store = open_history_file(history, Path(sys.argv[1]))
    payload = b'{"temperature": 21.5, "padding": "' + b"x" * 200 + b'"}'
    seq = 0
    while True:
        for _ in range(2000):
            history.offer(Received(f"t/{seq % 50}", payload, 0, False, time.time(), None))
            seq += 1
        store.write(history.take_changes())
        print(seq, flush=True)  # every message up to seq is committed
    """
)


def test_kill_9_mid_write_leaves_a_sound_file_with_every_flushed_message(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "killed.db"
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    writer = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(path)], stdout=subprocess.PIPE, text=True, env=env
    )
    assert writer.stdout is not None
    flushed = 0
    for _ in range(15):  # let it commit several flushes, then kill it while it writes the next
        flushed = int(writer.stdout.readline())
    writer.send_signal(signal.SIGKILL)
    writer.wait()
    assert writer.returncode == -signal.SIGKILL

    db = sqlite3.connect(path)
    assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    (count,) = db.execute("SELECT sum(count) FROM chunk").fetchone()
    db.close()
    assert flushed <= count < flushed + 2000 * 3  # at most the flushes in flight were lost
    history = History(10**9, 1e9, 1 << 40)
    open_history_file(history, path).close()  # and it opens again as a history
    assert history.messages == count


# ---- files that cannot be the history -------------------------------------------------------------------


def test_a_file_that_is_not_a_database_is_refused_naming_it(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "notes.txt"
    path.write_text("these are my notes, not a database\n" * 100)
    with pytest.raises(
        ConfigError, match=f"history.path: cannot keep the history in {path}: file is not a database"
    ):
        HistoryFile(path)
    assert path.read_text().startswith("these are my notes")  # untouched


def test_a_read_only_file_stops_the_server_with_exit_2_naming_it(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "history.db"
    HistoryFile(path).close()
    path.chmod(0o444)
    done = run_server(tmp_path, "history.db")
    assert done.returncode == 2, done.stderr
    assert (
        f"history.path: cannot keep the history in {path}: attempt to write a readonly database"
        in done.stderr
    )


def test_a_database_of_something_else_or_a_newer_schema_is_refused(tmp_path: pathlib.Path) -> None:
    other = tmp_path / "other.db"
    with sqlite3.connect(other) as db:
        db.execute("CREATE TABLE invoices (id INTEGER)")
    with pytest.raises(ConfigError, match="a SQLite database of something else"):
        HistoryFile(other)
    newer = tmp_path / "newer.db"
    HistoryFile(newer).close()
    with sqlite3.connect(newer) as db:
        db.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    with pytest.raises(ConfigError, match="newer mcpmqtt"):
        HistoryFile(newer)
    posing = tmp_path / "posing.db"
    with sqlite3.connect(posing) as db:
        db.execute("CREATE TABLE invoices (id INTEGER)")
        db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
    with pytest.raises(ConfigError, match=f"cannot read the history in {posing}: no such table"):
        open_history_file(History(10, 60, BIG), posing)


def run_server(folder: pathlib.Path, history_path: str) -> subprocess.CompletedProcess[str]:
    """Start `mcpmqtt` with a history file, as a user who cannot write over file permissions (root
    can: there the process runs without the capability that lets it)."""
    config = folder / "config.json"
    config.write_text(
        json.dumps(
            {"topics": [{"pattern": "a/#", "permissions": ["read"]}], "history": {"path": history_path}}
        )
    )
    command = [sys.executable, "-m", "mcpmqtt", "--config", str(config)]
    if os.geteuid() == 0:
        command = ["setpriv", "--bounding-set=-dac_override,-dac_read_search", *command]
    return subprocess.run(command, capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)


def test_the_server_exits_2_naming_a_history_file_that_is_not_a_database(tmp_path: pathlib.Path) -> None:
    bad = tmp_path / "history.db"
    bad.write_bytes(b"\x00garbage" * 1000)
    done = run_server(tmp_path, "history.db")
    assert done.returncode == 2
    assert f"history.path: cannot keep the history in {bad}: file is not a database" in done.stderr


def test_a_flush_still_running_when_the_last_one_starts_loses_nothing(
    tmp_path: pathlib.Path, caplog: pytest.LogCaptureFixture
) -> None:
    """At shutdown the cancelled flusher's write goes on in its thread while the final flush begins
    (found by bench/bench_history.py: 'cannot start a transaction within a transaction')."""
    history = History(10**9, 1e9, BIG, track_changes=True)
    store = open_history_file(history, tmp_path / "h.db")
    batches = []
    for batch in range(4):
        for i in range(20_000):
            history.offer(message(f"t/{i % 100}", b"x" * 100, T + batch))
        batches.append(history.take_changes())
    threads = [threading.Thread(target=store.write, args=(changes,)) for changes in batches]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert "cannot write the history file" not in caplog.text
    assert len(store.rows()) == 80_000
    store.close()


@given(
    st.lists(st.tuples(st.sampled_from(["a", "b", "c"]), st.binary(max_size=20), st.booleans()), max_size=60),
    st.integers(min_value=1, max_value=5),
    st.integers(min_value=0, max_value=2000),
)
@settings(max_examples=60, deadline=None)
def test_the_file_reopens_to_exactly_what_memory_kept(
    tmp_path_factory: pytest.TempPathFactory,
    offers: list[tuple[str, bytes, bool]],
    per_topic: int,
    spare: int,
) -> None:
    """Whatever the bounds dropped (whole topics too), flushing at random points and reopening gives
    the memory's history back, message numbers and all."""
    path = tmp_path_factory.mktemp("mirror") / "h.db"
    max_bytes = TOPIC_COST * 2 + spare
    history = History(per_topic, 1e9, max_bytes, track_changes=True)
    store = open_history_file(history, path)
    for index, (topic, payload, flush) in enumerate(offers):
        history.offer(message(topic, payload, T + index))
        if flush:
            flush_now(history, store)
    flush_now(history, store)
    store.close()
    again = History(per_topic, 1e9, max_bytes)
    open_history_file(again, path).close()
    assert sorted(kept(again)) == sorted(kept(history))
    numbered = {s.topic: (s.first_seq, len(s.entries)) for s in history.snapshot(lambda _: True)}
    assert {s.topic: (s.first_seq, len(s.entries)) for s in again.snapshot(lambda _: True)} == numbered


def test_check_config_says_where_the_history_is_kept(
    tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from mcpmqtt.cli import main

    config = tmp_path / "config.json"
    topics = [{"pattern": "a/#", "permissions": ["read"]}]
    config.write_text(json.dumps({"topics": topics, "history": {"path": "h.db", "max_age": "7d"}}))
    assert main(["check-config", "--config", str(config)]) == 0
    line = [text for text in capsys.readouterr().out.splitlines() if text.startswith("history:")]
    assert line == [
        f"history: file {tmp_path / 'h.db'} (flushed every 1 s); ≤ 1,000 messages per topic, 7d, "
        "≤ 67,108,864 bytes"
    ]
    assert not (tmp_path / "h.db").exists()  # checking a config creates nothing
