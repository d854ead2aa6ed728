"""Enrolment and identification: clips -> embeddings -> profiles in a store, or -> ranked enrolled speakers.

Clips are embedded exactly as ``python -m src.evaluate.verify --embed`` embeds files (src/evaluate/extract.py's
bucketed batches, any sample rate resampled to the recipe's; with ``vad: silero`` only their speech, and speech
longer than ``max_eval_seconds`` in averaged windows), so an embedding in the store equals the one verify writes
for the same file, checkpoint and settings.

Scores are cosine similarities between a clip's embedding and a speaker's profile (the mean of the speaker's
length-normalised clip embeddings, length-normalised again). With a calibration file of ``python -m src.calibrate``
(fitted on cosine scores for the same checkpoint), each score also gets its log-likelihood ratio, and the open-set
decision is the best candidate when its LLR reaches the Bayes threshold ``log((1 - p_target) / p_target)``, else
"unknown". The calibration's quality measures read the profile side as the whole enrolment: ``duration`` its
total seconds, ``norm`` the mean log length of its raw clip embeddings.

Example::

    identity = store_identity(cfg, file_sha256(checkpoint))
    clips = embed_clips(cfg, embedder, ["alice1.wav", "alice2.wav"])
    open_store("sqlite", "speakers.db", identity, create=True).enroll([Enrolment.from_clips("alice", clips)])
    identify(store, embed_clips(cfg, embedder, ["who.wav"]), k=5)     # [Identification(...)]
"""
import dataclasses
import json

import numpy as np

from src.evaluate.calibration import scoring_settings, trial_features
from src.evaluate.metrics import bayes_threshold
from src.speakers.metrics import UNKNOWN
from src.speakers.profiles import Clip


def store_identity(cfg, checkpoint_sha256):
    """What a store's embeddings depend on -> JSON-ready dict: the checkpoint's sha256, the embedder settings
    (src/model/embedder.py EMBEDDER_KEYS) and which audio reaches the network: ``max_eval_seconds`` and the VAD and
    long-audio settings (src/evaluate/extract.py ``Batching.speech_fingerprint``)."""
    from src.evaluate.extract import Batching
    from src.model.embedder import embedder_settings
    identity = {"checkpoint_sha256": checkpoint_sha256, "model": embedder_settings(cfg),
                "audio": {"max_eval_seconds": float(cfg.max_eval_seconds),
                          **Batching.from_recipe(cfg).speech_fingerprint()}}
    return json.loads(json.dumps(identity))


def embed_clips(cfg, embedder, paths, progress=None):
    """Embed audio files -> list of Clip (path as given, raw embedding (D,) float32, seconds of speech embedded), in
    order.

    Raises AudioError naming the file for missing, unreadable, empty or too-short audio.
    """
    from src.evaluate.extract import embedded_seconds, extract_embeddings
    from src.evaluate.verify import files_batching
    batching = files_batching(cfg, paths)
    embeddings = extract_embeddings(embedder, paths, "", batching, resample=True,
                                    progress=len(paths) > 20 if progress is None else progress)
    seconds = embedded_seconds(paths, "", batching, resample=True)
    return [Clip(path, embeddings[path], seconds[path]) for path in paths]


@dataclasses.dataclass
class Identification:
    """The answer for one clip: ``candidates`` list of (name, score) best first; with a calibration also ``llrs``
    (one per candidate) and ``decision`` (a name or "unknown")."""
    clip: str
    candidates: list
    llrs: list = None
    decision: str = None

    def as_dict(self):
        record = {"clip": self.clip, "candidates": [{"speaker": n, "score": s} for n, s in self.candidates]}
        if self.llrs is not None:
            for candidate, llr in zip(record["candidates"], self.llrs):
                candidate["llr"] = llr
            record["decision"] = self.decision
        return record


def check_calibration(calibration, path, cfg, checkpoint_sha256):
    """Refuse a calibration that does not fit cosine scoring of this checkpoint, or needs a cohort."""
    if "imposter_mean" in calibration.quality:
        raise ValueError(f"{path}: the imposter_mean quality measure needs a cohort, which identification against "
                         f"a speaker store does not score with; calibrate with duration and norm only")
    calibration.check_fits(path, checkpoint_sha256, scoring_settings(cfg, calibration.quality))


def candidate_llrs(calibration, clip, candidates, profiles):
    """LLRs of ``clip`` (a Clip) against each (name, score) candidate -> list of float.

    ``profiles``: dict name -> store row (``seconds``, ``log_norm``) of at least the candidates.
    """
    if not candidates:
        return []
    values = {"duration": {"test": float(np.log(clip.seconds))},
              "norm": {"test": float(np.log(max(np.linalg.norm(clip.embedding), 1e-12)))}}
    for name, _ in candidates:
        values["duration"][name] = float(np.log(profiles[name]["seconds"]))
        values["norm"][name] = float(profiles[name]["log_norm"])
    trials = [(0, name, "test") for name, _ in candidates]
    features = trial_features(trials, [score for _, score in candidates], calibration.quality, values)
    return [float(v) for v in calibration.llrs(features)]


def identify(store, clips, k, calibration=None, p_target=0.01):
    """Rank the enrolled speakers for each Clip -> list of Identification (module docstring for the decision)."""
    if not clips:
        return []
    ranked = store.search(np.stack([c.embedding for c in clips]), k)
    results = [Identification(clip.path, candidates) for clip, candidates in zip(clips, ranked)]
    if calibration is None:
        return results
    profiles = {row["name"]: row for row in store.speakers({n for c in ranked for n, _ in c})}
    threshold = bayes_threshold(p_target)
    for clip, result in zip(clips, results):
        result.llrs = candidate_llrs(calibration, clip, result.candidates, profiles)
        best = result.candidates[0][0] if result.candidates else UNKNOWN
        result.decision = best if result.llrs and result.llrs[0] >= threshold else UNKNOWN
    return results
