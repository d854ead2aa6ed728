"""The speaker store: enrolled speakers' profiles and clip embeddings, tied to what made them (no MindSpore).

An enrolled speaker (``Enrolment``) is a name, a profile (the mean of the clips' length-normalised embeddings,
(D,) float32) and its clips (path, raw embedding (D,), seconds of audio embedded). A store holds the enrolments of
one *identity* (``store_identity``): the checkpoint's sha256, the embedder settings (front end and network keys)
and the settings that decide which audio reaches the network (VAD, long-audio handling, crop). Embeddings of any
other identity are refused with one line naming what differs, since scores between them would mean nothing.

Backends, one interface (``open_store``):

- ``SQLiteStore`` (default): one SQLite file, standard library only. Every change is one transaction (an
  interrupted enrolment leaves the store as it was); write-ahead logging lets ``identify`` read while ``enroll``
  writes. Identification is an exact search: all profiles are read once into a matrix and scored by one matrix
  product.
- ``MilvusStore`` (src/speakers/milvus_store.py): the same operations on Milvus through ``pymilvus``, for stores
  that outgrow one machine.

Example::

    store = open_store("sqlite", "speakers.db", identity, create=True)
    store.enroll([Enrolment.from_clips("alice", [Clip("a1.wav", emb1, 3.2), Clip("a2.wav", emb2, 4.0)])])
    store.search(queries, k=5)        # [[("alice", 0.83), ("bob", 0.41), ...], ...] best first
"""
import json
import os
import sqlite3

import numpy as np

from src.speakers.profiles import SPEAKER_FIELDS, Clip, NoStore, StoreError, check_identity, normalized, now, top_k

FORMAT = "ecapa-tdnn speaker store 1"
BACKENDS = ("sqlite", "milvus")
SEARCH_CHUNK = 65536            # profiles scored per matrix product in an exact search


# ---------------------------------------------------------------- SQLite
SCHEMA = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE speakers (name TEXT PRIMARY KEY, profile BLOB NOT NULL, num_clips INTEGER NOT NULL,
                       seconds REAL NOT NULL, log_norm REAL NOT NULL, enrolled TEXT NOT NULL);
CREATE TABLE clips (speaker TEXT NOT NULL REFERENCES speakers(name) ON DELETE CASCADE, path TEXT NOT NULL,
                    embedding BLOB NOT NULL, seconds REAL NOT NULL);
CREATE INDEX clips_of_speaker ON clips(speaker);
"""


class SQLiteStore:
    """A speaker store in one SQLite file (module docstring). Open it with ``open_store``."""

    def __init__(self, path, identity, create=False):
        self.path = path
        exists = os.path.isfile(path)
        if not exists and not create:
            raise NoStore(f"{path}: no speaker store here (python -m src.speakers enroll creates one)")
        if create and os.path.dirname(path):
            os.makedirs(os.path.dirname(path), exist_ok=True)
        try:
            self.db = sqlite3.connect(path, timeout=60.0, isolation_level=None)   # transactions are explicit
            self.db.execute("PRAGMA foreign_keys = ON")
            self.db.execute("PRAGMA journal_mode = WAL")
            tables = {row[0] for row in self.db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
            if not tables and not create:
                raise StoreError(f"{path}: an empty file, not a speaker store")
            if not tables:
                self._create(identity)
            elif "meta" not in tables:
                raise StoreError(f"{path}: an SQLite file but not a speaker store (no meta table)")
            meta = dict(self.db.execute("SELECT key, value FROM meta"))
        except sqlite3.DatabaseError as err:
            raise StoreError(f"{path}: not a readable speaker store ({err})") from None
        if meta.get("format") != FORMAT:
            raise StoreError(f"{path}: expected a speaker store of format {FORMAT!r}, got {meta.get('format')!r}")
        self.identity = json.loads(meta["identity"])
        if identity is not None:
            check_identity(path, self.identity, identity)
        self.dim = int(meta["dim"]) if "dim" in meta else None
        self._matrix = None

    def _create(self, identity):
        with self.transaction():
            for statement in filter(str.strip, SCHEMA.split(";")):
                self.db.execute(statement)
            self.db.executemany("INSERT INTO meta VALUES (?, ?)", [
                ("format", FORMAT), ("identity", json.dumps(identity, sort_keys=True)), ("created", now())])

    def transaction(self):
        return _Transaction(self.db)

    def has(self, name):
        return self.db.execute("SELECT 1 FROM speakers WHERE name = ?", (name,)).fetchone() is not None

    def enroll(self, enrolments, replace=False):
        """Store each Enrolment of the list in one transaction: all of them, or (on any error or interruption)
        none. A name already enrolled is refused unless ``replace`` (then its profile and clips are replaced)."""
        dim = self.dim
        try:
            self._enroll(enrolments, replace)
        except BaseException:
            self.dim = dim                           # the transaction was rolled back, the size with it
            raise
        self._matrix = None

    def _enroll(self, enrolments, replace):
        with self.transaction():
            for enrolment in enrolments:
                self._check_dim(enrolment.profile.size)
                if self.has(enrolment.name):
                    if not replace:
                        raise StoreError(f"{self.path}: speaker {enrolment.name!r} is already enrolled "
                                         f"(--replace replaces it)")
                    self.db.execute("DELETE FROM speakers WHERE name = ?", (enrolment.name,))
                self.db.execute("INSERT INTO speakers VALUES (?, ?, ?, ?, ?, ?)", (
                    enrolment.name, enrolment.profile.astype(np.float32).tobytes(), len(enrolment.clips),
                    enrolment.seconds, enrolment.log_norm, now()))
                self.db.executemany("INSERT INTO clips VALUES (?, ?, ?, ?)", (
                    (enrolment.name, clip.path, np.asarray(clip.embedding, np.float32).tobytes(), float(clip.seconds))
                    for clip in enrolment.clips))

    def _check_dim(self, dim):
        if self.dim is None:
            self.db.execute("INSERT INTO meta VALUES ('dim', ?)", (str(dim),))
            self.dim = dim
        elif dim != self.dim:
            raise StoreError(f"{self.path}: embeddings of size {dim} do not fit this store's size {self.dim}")

    def remove(self, name):
        """Remove a speaker and its clips (one transaction); an unknown name is an error."""
        with self.transaction():
            if self.db.execute("DELETE FROM speakers WHERE name = ?", (name,)).rowcount == 0:
                raise StoreError(f"{self.path}: no speaker {name!r} is enrolled")
        self._matrix = None

    def speakers(self, names=None):
        """The enrolled speakers (those of ``names`` only, when given) -> list of dicts with SPEAKER_FIELDS, sorted
        by name."""
        query = f"SELECT {', '.join(SPEAKER_FIELDS)} FROM speakers"
        if names is None:
            rows = self.db.execute(query + " ORDER BY name").fetchall()
        else:
            names = sorted(set(names))
            rows = [row for start in range(0, len(names), 500) for row in self.db.execute(
                query + f" WHERE name IN ({', '.join('?' * len(names[start:start + 500]))}) ORDER BY name",
                names[start:start + 500])]
        return [dict(zip(SPEAKER_FIELDS, row)) for row in rows]

    def clips(self, name):
        """The clips of ``name`` -> list of Clip, in enrolment order."""
        rows = self.db.execute("SELECT path, embedding, seconds FROM clips WHERE speaker = ? ORDER BY rowid", (name,))
        return [Clip(path, np.frombuffer(blob, np.float32), seconds) for path, blob, seconds in rows]

    def _profiles(self):
        """(names, (N, D) float32 unit-length profiles), read once per change."""
        if self._matrix is None:
            names, blobs = [], []
            for name, blob in self.db.execute("SELECT name, profile FROM speakers ORDER BY name"):
                names.append(name)
                blobs.append(blob)
            dim = self.dim or 0
            matrix = np.frombuffer(b"".join(blobs), np.float32).reshape(len(names), dim)
            self._matrix = (names, normalized(matrix))
        return self._matrix

    def search(self, queries, k):
        """Cosine scores of each query (Q, D) against every profile -> list of Q lists of (name, score), best
        first, at most ``k`` each."""
        names, matrix = self._profiles()
        queries = normalized(np.atleast_2d(queries))
        if names and queries.shape[1] != self.dim:
            raise StoreError(f"{self.path}: embeddings of size {queries.shape[1]} do not fit this store's size "
                             f"{self.dim}")
        best = [[] for _ in range(queries.shape[0])]
        for start in range(0, len(names), SEARCH_CHUNK):
            part = top_k(queries @ matrix[start:start + SEARCH_CHUNK].T, names[start:start + SEARCH_CHUNK], k)
            best = [sorted(b + p, key=lambda item: -item[1])[:k] for b, p in zip(best, part)]
        return best

    def close(self):
        self.db.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class _Transaction:
    """``with``: BEGIN IMMEDIATE (the write lock at once, so two writers queue instead of failing halfway), COMMIT
    at the end, ROLLBACK on any error."""

    def __init__(self, db):
        self.db = db

    def __enter__(self):
        self.db.execute("BEGIN IMMEDIATE")

    def __exit__(self, kind, error, trace):
        self.db.execute("COMMIT" if kind is None else "ROLLBACK")


# ---------------------------------------------------------------- choosing a backend
def open_store(backend, location, identity, create=False, collection="speakers", milvus_index="FLAT"):
    """The store at ``location`` -> SQLiteStore or MilvusStore; raises NoStore when there is none and not
    ``create``.

    backend "sqlite": ``location`` is the file. backend "milvus": ``location`` is what ``pymilvus.MilvusClient``
    takes (a local ``*.db`` path runs milvus-lite in-process; ``http://host:19530`` a Milvus server), and
    ``collection`` names the store's collections there, ``milvus_index`` the index of a new store's profiles.
    ``identity`` (``store_identity``): refuse a store of another one; None reads any store (list, remove).
    ``create``: make an empty store when there is none (enroll).
    """
    if backend == "sqlite":
        return SQLiteStore(location, identity, create)
    if backend == "milvus":
        from src.speakers.milvus_store import MilvusStore
        return MilvusStore(location, identity, create, collection, milvus_index)
    raise StoreError(f"--backend: expected one of {', '.join(BACKENDS)}, got {backend!r}")
