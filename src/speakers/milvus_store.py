"""The speaker store on Milvus (``pymilvus``): the operations of src/speakers/store.py's SQLiteStore.

Where the store lives is what ``pymilvus.MilvusClient`` takes as its ``uri``:

- a local path ending in ``.db`` (e.g. ``speakers_milvus.db``): milvus-lite, Milvus embedded in this process
  (``pip install milvus-lite``); the path is a folder it creates;
- ``http://host:19530``: a Milvus server or cluster (standalone, distributed, or Zilliz Cloud), with its token (user
  ``name:password``, or an API key) in the environment variable ``MILVUS_TOKEN`` when it asks for one.

A store named ``collection`` (default ``speakers``) is three collections:

- ``<collection>_meta``: one row ``identity`` holding the JSON identity and the embedding size (Milvus wants a vector
  field in every collection: a 2-dimensional zero vector);
- ``<collection>_profiles``: ``name`` (primary key), ``vector`` (the unit-length profile, searched by inner product
  = cosine), ``num_clips``, ``seconds``, ``log_norm``, ``enrolled``;
- ``<collection>_clips``: ``id`` (``<name>/<n>``), ``speaker``, ``path``, ``vector`` (the raw clip embedding),
  ``seconds``.

Milvus has no transactions over several rows, so an enrolment is ordered to be safe when interrupted: the clips are
written first (upserted under the ids ``<name>/0``, ``<name>/1``, ...) and the profile, the only row ``identify``
reads, last; a speaker's clips are the first ``num_clips`` ids of its profile. An interrupted enrolment leaves at most
clip rows that no profile counts, which the next enrolment of that name overwrites and ``remove`` deletes. Removal
deletes the profile first. Every collection is created with Strong consistency, so a search sees every finished
enrolment.

The profile index is ``index`` (``FLAT``, exact, by default: the same answers as SQLite; ``HNSW`` or ``AUTOINDEX``
for large stores on a server, approximate).
"""
import json
import os

import numpy as np

from src.speakers.profiles import SPEAKER_FIELDS, Clip, NoStore, StoreError, check_identity, normalized, now

MAX_NAME = 256
MAX_PATH = 4096
MAX_LIMIT = 16384        # Milvus's largest top-k and query page
INDEX_PARAMS = {"FLAT": {}, "HNSW": {"M": 16, "efConstruction": 200}, "AUTOINDEX": {}}
SEARCH_PARAMS = {"FLAT": {}, "HNSW": {"ef": 256}, "AUTOINDEX": {}}


def quoted(text):
    """A string literal of a Milvus filter expression."""
    return json.dumps(text)


class MilvusStore:
    """A speaker store in Milvus collections (module docstring). Open it with src/speakers/store.py ``open_store``."""

    def __init__(self, uri, identity, create=False, collection="speakers", index="FLAT"):
        try:
            from pymilvus import DataType, MilvusClient
            from pymilvus.exceptions import MilvusException
        except ImportError as err:
            raise StoreError(f"--backend milvus needs pymilvus (and milvus-lite for a local .db path): pip install "
                             f"-r requirements.txt ({err})") from None
        if index not in INDEX_PARAMS:
            raise StoreError(f"milvus index: expected one of {', '.join(INDEX_PARAMS)}, got {index!r}")
        self.path, self.index, self.DataType, self.MilvusException = uri, index, DataType, MilvusException
        local = "://" not in uri
        if local and not create and not os.path.exists(uri):
            raise NoStore(f"{uri}: no speaker store here (python -m src.speakers enroll creates one)")
        if local and os.path.dirname(uri):
            os.makedirs(os.path.dirname(uri), exist_ok=True)
        try:
            self.client = MilvusClient(uri, token=os.environ.get("MILVUS_TOKEN", ""))
        except Exception as err:        # noqa: BLE001 (pymilvus raises many kinds; each becomes one line)
            raise StoreError(f"{uri}: cannot open Milvus ({type(err).__name__}: {err})") from None
        self.meta, self.profiles, self.clip_rows = (f"{collection}_{part}" for part in ("meta", "profiles", "clips"))
        if not self.client.has_collection(self.meta):
            if not create:
                raise NoStore(f"{uri}: no speaker store {collection!r} in this Milvus (python -m src.speakers "
                                 f"enroll creates one)")
            self._create_meta(identity)
        for name in (self.meta, self.profiles, self.clip_rows):     # a reopened store's collections are released
            if self.client.has_collection(name):
                self._call(self.client.load_collection, name)
        row = self._call(self.client.get, self.meta, ids=["identity"], output_fields=["value"])
        if not row:
            raise StoreError(f"{uri}: collection {self.meta} holds no store identity")
        stored = json.loads(row[0]["value"])
        self.identity, self.dim = stored["identity"], stored.get("dim")
        self.index = stored.get("index") or index          # the index the profiles were made with, once they are
        if identity is not None:
            check_identity(f"{uri} ({collection})", self.identity, identity)

    def _call(self, method, *args, **kwargs):
        """A pymilvus call whose failure becomes one StoreError line naming the store."""
        try:
            return method(*args, **kwargs)
        except self.MilvusException as err:
            raise StoreError(f"{self.path}: Milvus {method.__name__} failed ({err.message})") from None

    def _create_meta(self, identity):
        schema = self.client.create_schema(auto_id=False, enable_dynamic_field=False)
        schema.add_field("id", self.DataType.VARCHAR, is_primary=True, max_length=64)
        schema.add_field("value", self.DataType.VARCHAR, max_length=65535)
        schema.add_field("vector", self.DataType.FLOAT_VECTOR, dim=2)
        self._make_collection(self.meta, schema)
        self._write_meta(identity, None)

    def _write_meta(self, identity, dim):
        value = json.dumps({"identity": identity, "dim": dim, "index": self.index if dim else None, "written": now()},
                           sort_keys=True)
        self._call(self.client.upsert, self.meta, [{"id": "identity", "value": value, "vector": [0.0, 0.0]}])

    def _make_collection(self, name, schema, index="FLAT"):
        params = self.client.prepare_index_params()
        params.add_index(field_name="vector", index_type=index, metric_type="IP", params=INDEX_PARAMS[index])
        self._call(self.client.create_collection, name, schema=schema, index_params=params,
                   consistency_level="Strong")

    def _create_data_collections(self, dim):
        profiles = self.client.create_schema(auto_id=False, enable_dynamic_field=False)
        profiles.add_field("name", self.DataType.VARCHAR, is_primary=True, max_length=MAX_NAME)
        profiles.add_field("vector", self.DataType.FLOAT_VECTOR, dim=dim)
        profiles.add_field("num_clips", self.DataType.INT64)
        profiles.add_field("seconds", self.DataType.DOUBLE)
        profiles.add_field("log_norm", self.DataType.DOUBLE)
        profiles.add_field("enrolled", self.DataType.VARCHAR, max_length=64)
        self._make_collection(self.profiles, profiles, self.index)
        clips = self.client.create_schema(auto_id=False, enable_dynamic_field=False)
        clips.add_field("id", self.DataType.VARCHAR, is_primary=True, max_length=MAX_NAME + 16)
        clips.add_field("speaker", self.DataType.VARCHAR, max_length=MAX_NAME)
        clips.add_field("path", self.DataType.VARCHAR, max_length=MAX_PATH)
        clips.add_field("vector", self.DataType.FLOAT_VECTOR, dim=dim)
        clips.add_field("seconds", self.DataType.DOUBLE)
        self._make_collection(self.clip_rows, clips)
        self._write_meta(self.identity, dim)
        self.dim = dim

    def has(self, name):
        return bool(self._enrolled([name]))

    def enroll(self, enrolments, replace=False):
        """Store each Enrolment of the list (clips first, profile last: see the module docstring). A name already
        enrolled is refused unless ``replace``; every name is checked before anything is written."""
        for enrolment in enrolments:
            if self.dim is not None and enrolment.profile.size != self.dim:
                raise StoreError(f"{self.path}: embeddings of size {enrolment.profile.size} do not fit this store's "
                                 f"size {self.dim}")
            if any(len(clip.path) > MAX_PATH for clip in enrolment.clips):
                raise StoreError(f"{self.path}: clip paths longer than {MAX_PATH} characters cannot be stored")
        names = [e.name for e in enrolments]
        if not replace:
            taken = self._enrolled(names)
            if taken:
                raise StoreError(f"{self.path}: speaker {sorted(taken)[0]!r} is already enrolled (--replace "
                                 f"replaces it)")
        if enrolments and self.dim is None:
            self._create_data_collections(int(enrolments[0].profile.size))
        clip_rows = [{"id": f"{e.name}/{i}", "speaker": e.name, "path": clip.path, "seconds": float(clip.seconds),
                      "vector": np.asarray(clip.embedding, np.float32)} for e in enrolments
                     for i, clip in enumerate(e.clips)]
        for start in range(0, len(clip_rows), 10000):      # upsert: over the rows of an earlier or broken enrolment
            self._call(self.client.upsert, self.clip_rows, clip_rows[start:start + 10000])
        profiles = normalized(np.stack([e.profile for e in enrolments])) if enrolments else []
        rows = [{"name": e.name, "vector": vector, "num_clips": len(e.clips), "seconds": e.seconds,
                 "log_norm": e.log_norm, "enrolled": now()} for e, vector in zip(enrolments, profiles)]
        write = self.client.upsert if replace else self.client.insert       # upsert: delete, then insert
        for start in range(0, len(rows), 10000):
            self._call(write, self.profiles, rows[start:start + 10000])
        self._call(self.client.flush, self.profiles)

    def _enrolled(self, names):
        """The names of ``names`` that are enrolled -> set."""
        if self.dim is None:
            return set()
        return {row["name"] for start in range(0, len(names), 1000) for row in self._call(
            self.client.get, self.profiles, ids=names[start:start + 1000], output_fields=["name"])}

    def _delete_clips(self, names):
        for start in range(0, len(names), 1000):
            chunk = ", ".join(quoted(name) for name in names[start:start + 1000])
            self._call(self.client.delete, self.clip_rows, filter=f"speaker in [{chunk}]")

    def remove(self, name):
        """Remove a speaker (its profile first, then its clips); an unknown name is an error."""
        if not self.has(name):
            raise StoreError(f"{self.path}: no speaker {name!r} is enrolled")
        self._call(self.client.delete, self.profiles, ids=[name])
        self._delete_clips([name])

    def speakers(self, names=None):
        """The enrolled speakers (those of ``names`` only, when given) -> list of dicts with SPEAKER_FIELDS, sorted
        by name."""
        if self.dim is None:
            return []
        if names is not None:
            names = sorted(set(names))
            rows = [row for start in range(0, len(names), 1000) for row in self._call(
                self.client.get, self.profiles, ids=names[start:start + 1000], output_fields=list(SPEAKER_FIELDS))]
        else:
            rows = []
            pages = self._call(self.client.query_iterator, self.profiles, batch_size=MAX_LIMIT // 2, filter="",
                               output_fields=list(SPEAKER_FIELDS))
            while True:
                page = self._call(pages.next)
                if not page:
                    break
                rows += page
            pages.close()
        return sorted(({field: row[field] for field in SPEAKER_FIELDS} for row in rows), key=lambda r: r["name"])

    def clips(self, name):
        """The clips of ``name`` -> list of Clip, in enrolment order."""
        if self.dim is None:
            return []
        profile = self._call(self.client.get, self.profiles, ids=[name], output_fields=["num_clips"])
        if not profile:
            return []
        ids = [f"{name}/{i}" for i in range(profile[0]["num_clips"])]
        rows = self._call(self.client.get, self.clip_rows, ids=ids, output_fields=["id", "path", "vector", "seconds"])
        rows.sort(key=lambda row: int(row["id"].rsplit("/", 1)[1]))
        return [Clip(row["path"], np.asarray(row["vector"], np.float32), row["seconds"]) for row in rows]

    def search(self, queries, k):
        """Cosine scores of each query (Q, D) against the profiles -> list of Q lists of (name, score), best first,
        at most ``k`` each (``k`` <= 16384, Milvus's limit)."""
        queries = normalized(np.atleast_2d(queries))
        if self.dim is None:
            return [[] for _ in range(queries.shape[0])]
        if queries.shape[1] != self.dim:
            raise StoreError(f"{self.path}: embeddings of size {queries.shape[1]} do not fit this store's size "
                             f"{self.dim}")
        hits = self._call(self.client.search, self.profiles, data=list(queries), limit=min(int(k), MAX_LIMIT),
                          anns_field="vector", output_fields=["name"],
                          search_params={"metric_type": "IP", "params": SEARCH_PARAMS[self.index]})
        return [[(hit["entity"]["name"], float(hit["distance"])) for hit in row] for row in hits]

    def close(self):
        """Close the client and, for milvus-lite, stop its in-process server (its files are closed cleanly)."""
        self.client.close()
        if "://" not in self.path:
            from milvus_lite.server_manager import server_manager_instance
            server_manager_instance.release_server(self.path)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
