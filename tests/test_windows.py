"""Windows over speech regions and long recordings (src/recordings/windows.py, src/evaluate/extract.py): window
placement, what of a file is embedded, and batched window embeddings equal to each window embedded alone."""
import dataclasses

import mindspore as ms
import numpy as np
import pytest

from src.data.audio import write_wav
from src.data.synthetic import _rng, random_speaker, synthesize_recording
from src.evaluate.extract import Batching, extract_embeddings
from src.model.ecapa_tdnn import ECAPA_TDNN
from src.model.embedder import Embedder
from src.recordings.vad import VadSettings, speech_samples
from src.recordings.embed import embed_windows, recording_embedding
from src.recordings.windows import LongAudio, plan_from_regions, speech_windows, weighted_mean, window_bounds
from tests.modes import op_by_op

SMALL = dict(channels=32, mfa_channels=96, embedding_size=16, attention_channels=16, se_channels=16,
             res2net_scale=2)


def test_windows_cover_each_region_and_never_cross_a_gap():
    regions = [(0.5, 2.0), (3.0, 10.0), (11.0, 14.2)]
    windows = speech_windows(regions, 3.0, 1.5)
    assert windows[0] == (0.5, 2.0)                                       # shorter than a window: itself
    assert windows[1:6] == [(3.0, 6.0), (4.5, 7.5), (6.0, 9.0), (7.0, 10.0), (11.0, 14.0)]
    assert windows[6] == pytest.approx((11.2, 14.2))                      # the last one ends at the region's end
    for start, end in windows:
        assert any(a <= start and end <= b for a, b in regions) and end - start <= 3.0
    assert window_bounds([(0, 48000)], 48000, 24000) == [(0, 48000)]


def test_plan_joins_short_speech_windows_long_speech_or_crops_it():
    windows, crop = LongAudio("windows", 1.0, 0.5), LongAudio("crop")
    regions = [(1000, 9000), (20000, 30000)]
    short = plan_from_regions(regions, 40000, windows, 32000, 400)
    assert short.pieces == (((1000, 9000), (20000, 30000)),) and short.speech_samples == 18000
    long = plan_from_regions(regions, 40000, windows, 16000, 400)
    assert long.pieces == (((1000, 9000),), ((20000, 30000),))       # each region fits one 1 s window
    cropped = plan_from_regions(regions, 40000, crop, 12000, 400)
    assert cropped.pieces == (((1000, 9000), (20000, 24000)),) and cropped.cropped
    nothing = plan_from_regions([], 40000, windows, 64000, 400)
    assert nothing.no_speech and nothing.pieces == (((0, 40000),),)
    tiny = plan_from_regions([(i * 1000, i * 1000 + 300) for i in range(100)], 100000, windows, 16000, 400)
    assert tiny.pieces == (tuple((i * 1000, i * 1000 + 300) for i in range(53)) + ((53000, 53100),),) and tiny.cropped
    assert weighted_mean([[1.0, 0.0], [0.0, 1.0]], [3, 1]).tolist() == [0.75, 0.25]


@pytest.fixture(scope="module")
def embedder():
    ms.set_seed(0)
    network = ECAPA_TDNN(**SMALL)
    network.set_train(False)
    return Embedder(network)


@pytest.fixture(scope="module")
def recording():
    rng = _rng(3, 21, 0)
    wav, _ = synthesize_recording(random_speaker(rng), 8.0, rng, silence_fraction=0.4)
    return wav


def alone(embedder, samples):
    """One waveform embedded by itself, unpadded (PYNATIVE: no graph per length)."""
    with op_by_op():
        return embedder(ms.Tensor(samples[None]), ms.Tensor(np.array([samples.size], np.int32))).asnumpy()[0]


def test_batched_windows_equal_each_window_alone(embedder, recording):
    batching = Batching(bucket_seconds=(1.0,), max_seconds=2.0, batch_size=4, vad=VadSettings("silero"),
                        long_audio=LongAudio("windows", 2.0, 1.0))
    regions = [(s / 16000, e / 16000) for s, e in speech_samples(recording, batching.vad)]
    windows = speech_windows(regions, 2.0, 1.0)
    assert len(windows) >= 4
    matrix = embed_windows(embedder, recording, windows, batching)
    assert matrix.shape == (len(windows), 16)
    for row, (start, end) in zip(matrix, windows):
        piece = recording[int(round(start * 16000)):int(round(end * 16000))]
        np.testing.assert_allclose(row, alone(embedder, piece), atol=1e-5, rtol=0)


def test_a_long_file_is_the_weighted_mean_of_its_windows(embedder, recording, tmp_path):
    path = str(tmp_path / "long.wav")
    write_wav(path, recording, subtype="FLOAT")
    batching = Batching(bucket_seconds=(1.0,), max_seconds=2.0, batch_size=4, vad=VadSettings("silero"),
                        long_audio=LongAudio("windows", 2.0, 1.0))
    got = extract_embeddings(embedder, [path], "", batching, progress=False)[path]
    regions = speech_samples(recording, batching.vad)
    bounds = [(int(s), int(e)) for s, e in speech_windows(regions, 32000, 16000)]
    expected = weighted_mean([alone(embedder, recording[s:e]) for s, e in bounds], [e - s for s, e in bounds])
    np.testing.assert_allclose(got, expected, atol=1e-5, rtol=0)
    np.testing.assert_allclose(recording_embedding(embedder, recording, batching), expected, atol=1e-5, rtol=0)
    # crop: the first 2 s of speech only
    crop = dataclasses.replace(batching, long_audio=LongAudio("crop"))
    joined = np.concatenate([recording[s:e] for s, e in regions])[:32000]
    np.testing.assert_allclose(extract_embeddings(embedder, [path], "", crop, progress=False)[path],
                               alone(embedder, joined), atol=1e-5, rtol=0)
