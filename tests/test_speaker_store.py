"""The speaker store (src/speakers/store.py, milvus_store.py): the same behaviour on SQLite and on Milvus (milvus-lite),
searches against a direct computation, refusals that change nothing, and an enrolment killed mid-write."""
import json
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from src.speakers.profiles import Clip, Enrolment, NoStore, StoreError
from src.speakers.store import open_store

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
IDENTITY = {"checkpoint_sha256": "a" * 64, "model": {"channels": 32, "embedding_size": 8},
            "audio": {"max_eval_seconds": 1.5}}
DIM = 8


def enrolment(name, rng, num_clips=3, dim=DIM):
    return Enrolment.from_clips(name, [Clip(f"{name}/{i}.wav", rng.normal(size=dim).astype(np.float32), 1.0 + i)
                                       for i in range(num_clips)])


@pytest.fixture(params=["sqlite", "milvus"])
def location(request, tmp_path):
    """(backend, where) of a new store; milvus runs milvus-lite in this process."""
    if request.param == "milvus":
        pytest.importorskip("milvus_lite")
    return request.param, str(tmp_path / ("speakers.db" if request.param == "sqlite" else "milvus_speakers.db"))


def reopen(location, identity=IDENTITY, create=False):
    backend, where = location
    return open_store(backend, where, identity, create)


def test_profiles_clips_and_search_match_a_direct_computation(location):
    rng = np.random.default_rng(0)
    store = reopen(location, create=True)
    speakers = [enrolment(f"spk{i:02d}", rng, num_clips=1 + i % 3) for i in range(12)]
    store.enroll(speakers[:5])
    store.enroll(speakers[5:])
    store.close()
    store = reopen(location)
    # The profile is the mean of the clips' length-normalised embeddings; the clips are kept as given.
    alice = speakers[4]
    raw = np.stack([c.embedding for c in alice.clips]).astype(np.float64)
    np.testing.assert_allclose(alice.profile, (raw / np.linalg.norm(raw, axis=1, keepdims=True)).mean(0), atol=1e-6)
    kept = store.clips("spk04")
    assert [c.path for c in kept] == [c.path for c in alice.clips]
    np.testing.assert_array_equal(np.stack([c.embedding for c in kept]), raw.astype(np.float32))
    listed = store.speakers()
    assert [s["name"] for s in listed] == sorted(s.name for s in speakers)
    assert listed[4]["num_clips"] == 2 and listed[4]["seconds"] == pytest.approx(1.0 + 2.0)
    assert listed[4]["log_norm"] == pytest.approx(np.mean(np.log(np.linalg.norm(raw, axis=1))))
    # Top-k cosine search against numpy on all profiles.
    queries = rng.normal(size=(4, DIM)).astype(np.float32)
    profiles = np.stack([s.profile for s in speakers]).astype(np.float64)
    cosine = (queries / np.linalg.norm(queries, axis=1, keepdims=True)) @ (
        profiles / np.linalg.norm(profiles, axis=1, keepdims=True)).T
    for row, found in zip(cosine, store.search(queries, k=5)):
        best = np.argsort(-row)[:5]
        assert [name for name, _ in found] == [speakers[j].name for j in best]
        np.testing.assert_allclose([score for _, score in found], row[best], atol=1e-5)
    assert len(store.search(queries, k=50)[0]) == 12
    store.remove("spk03")
    assert "spk03" not in [s["name"] for s in store.speakers()] and store.clips("spk03") == []
    assert all(name != "spk03" for name, _ in store.search(queries, k=12)[0])
    store.close()


def test_refusals_name_the_cause_and_leave_the_store_as_it_was(location, tmp_path):
    rng = np.random.default_rng(1)
    store = reopen(location, create=True)
    store.enroll([enrolment("alice", rng), enrolment("bob", rng)])
    before = ([s["name"] for s in store.speakers()], store.clips("alice"))
    # A name already taken: refused, also when it comes second in one call (nothing of that call is written).
    with pytest.raises(StoreError, match="speaker 'alice' is already enrolled \\(--replace replaces it\\)"):
        store.enroll([enrolment("carol", rng), enrolment("alice", rng)])
    with pytest.raises(StoreError, match="embeddings of size 4 do not fit this store's size 8"):
        store.enroll([enrolment("dave", rng, dim=4)])
    with pytest.raises(StoreError, match="no speaker 'zoe' is enrolled"):
        store.remove("zoe")
    after = ([s["name"] for s in store.speakers()], store.clips("alice"))
    assert after[0] == before[0] == ["alice", "bob"]
    np.testing.assert_array_equal(np.stack([c.embedding for c in after[1]]), np.stack([c.embedding for c in before[1]]))
    # --replace replaces profile and clips.
    new = enrolment("alice", rng, num_clips=1)
    store.enroll([new], replace=True)
    assert len(store.clips("alice")) == 1
    np.testing.assert_allclose(store.search(new.profile[None], 1)[0][0][1], 1.0, atol=1e-5)
    store.close()
    # Another checkpoint or other settings: refused with the difference named; any identity may list.
    with pytest.raises(StoreError, match="another model or other settings \\(checkpoint sha256 aaaaaaaaaaaa... "
                                         "there, bbbbbbbbbbbb... here\\)"):
        reopen(location, dict(IDENTITY, checkpoint_sha256="b" * 64))
    with pytest.raises(StoreError, match="model channels: 32 there, 64 here"):
        reopen(location, dict(IDENTITY, model={"channels": 64, "embedding_size": 8}))
    with reopen(location, None) as any_identity:
        assert [s["name"] for s in any_identity.speakers()] == ["alice", "bob"]
    # No store there.
    with pytest.raises(NoStore, match="no speaker store here"):
        open_store(location[0], str(tmp_path / "nothing.db"), IDENTITY)


def test_sqlite_refuses_unreadable_files_with_one_line(tmp_path):
    garbage = tmp_path / "garbage.db"
    garbage.write_bytes(b"this is not a database, just some text that is long enough" * 20)
    with pytest.raises(StoreError, match="garbage.db: not a readable speaker store \\(file is not a database\\)"):
        open_store("sqlite", str(garbage), IDENTITY)
    other = tmp_path / "other.db"
    with sqlite3.connect(other) as db:
        db.execute("CREATE TABLE t (x)")
    with pytest.raises(StoreError, match="other.db: an SQLite file but not a speaker store"):
        open_store("sqlite", str(other), IDENTITY)
    assert garbage.read_bytes().startswith(b"this is not a database")


# A real process that enrols 'mallory' with many clips and stops in the middle of the transaction: its clip
# generator prints 'halfway' after 2000 rows and then waits to be killed.
WRITER = textwrap.dedent("""
    import sys, time
    import numpy as np
    sys.path.insert(0, {root!r})
    from src.speakers.profiles import Clip, Enrolment
    from src.speakers.store import open_store

    class SlowClips(list):
        def __iter__(self):
            for i, clip in enumerate(list.__iter__(self)):
                if i == 2000:
                    print("halfway", flush=True)
                    time.sleep(600)
                yield clip

    store = open_store("sqlite", {path!r}, {identity!r})
    rng = np.random.default_rng(2)
    clips = [Clip(f"m/{{i}}.wav", rng.normal(size={dim}).astype(np.float32), 1.0) for i in range(5000)]
    enrolment = Enrolment.from_clips("mallory", clips)
    enrolment.clips = SlowClips(enrolment.clips)
    store.enroll([enrolment])
    print("committed", flush=True)
""")


def test_an_enrolment_killed_mid_write_leaves_the_store_intact_and_readable_meanwhile(tmp_path):
    path = str(tmp_path / "speakers.db")
    rng = np.random.default_rng(3)
    store = open_store("sqlite", path, IDENTITY, create=True)
    store.enroll([enrolment("alice", rng), enrolment("bob", rng)])
    store.close()
    writer = subprocess.Popen([sys.executable, "-c", WRITER.format(root=ROOT, path=path, identity=IDENTITY, dim=DIM)],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert writer.stdout.readline().strip() == "halfway"
        # The writer holds the write lock with 2000 clip rows and mallory's profile written but not committed:
        # a reader (identify) meanwhile sees the store as it was.
        probe = sqlite3.connect(path, timeout=0)
        with pytest.raises(sqlite3.OperationalError, match="database is locked"):
            probe.execute("BEGIN IMMEDIATE")
        probe.close()
        reader = open_store("sqlite", path, IDENTITY)
        assert [s["name"] for s in reader.speakers()] == ["alice", "bob"]
        assert [name for name, _ in reader.search(rng.normal(size=(1, DIM)), 5)[0]] != []
        reader.close()
        writer.send_signal(signal.SIGKILL)
        assert writer.wait(timeout=30) == -signal.SIGKILL
    finally:
        if writer.poll() is None:
            writer.kill()
            writer.wait()
    store = open_store("sqlite", path, IDENTITY)
    assert [s["name"] for s in store.speakers()] == ["alice", "bob"]
    assert store.clips("mallory") == []
    assert store.db.execute("SELECT count(*) FROM clips").fetchone()[0] == 6
    assert store.db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    # ... and takes the next enrolment normally.
    store.enroll([enrolment("mallory", rng)])
    assert [s["name"] for s in store.speakers()] == ["alice", "bob", "mallory"]
    store.close()


def test_the_stored_identity_is_readable_json(tmp_path):
    path = str(tmp_path / "speakers.db")
    open_store("sqlite", path, IDENTITY, create=True).close()
    with sqlite3.connect(path) as db:
        meta = dict(db.execute("SELECT key, value FROM meta"))
    assert json.loads(meta["identity"]) == IDENTITY
