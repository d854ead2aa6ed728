"""Speaker clustering (src/diarize/clustering.py) against scikit-learn's SpectralClustering, the eigengap estimate on
affinities with a known number of clusters, agglomerative clustering and the two-stage path for long recordings."""
import numpy as np
import pytest
from sklearn.cluster import SpectralClustering
from sklearn.metrics import adjusted_rand_score

from src.diarize.clustering import (ClusterSettings, cluster_embeddings, cosine_similarity, eigengap_count,
                                    laplacian_spectrum, pruned_affinity, spectral_labels)


def block_affinity(sizes, within, between, noise, seed):
    """A symmetric affinity with len(sizes) blocks: ``within`` inside a block, ``between`` across, plus uniform
    noise in [0, noise) -> ((N, N), true labels)."""
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(len(sizes)), sizes)
    affinity = np.where(labels[:, None] == labels[None, :], within, between) + noise * rng.random((len(labels),) * 2)
    affinity = 0.5 * (affinity + affinity.T)
    np.fill_diagonal(affinity, 1.0)
    return affinity, labels


def speaker_embeddings(counts, spread, dim=32, seed=0):
    """Embeddings around one random direction per speaker -> ((N, dim), labels)."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((len(counts), dim))
    labels = np.repeat(np.arange(len(counts)), counts)
    return centres[labels] + spread * rng.standard_normal((len(labels), dim)), labels


@pytest.mark.parametrize("sizes,seed", [((20, 30, 25), 0), ((15, 15, 40, 10), 1), ((50, 8), 2), ((12,) * 6, 3)])
def test_spectral_labels_agree_with_scikit_learn_on_precomputed_affinities(sizes, seed):
    affinity, truth = block_affinity(sizes, within=0.6, between=0.15, noise=0.4, seed=seed)
    ours = spectral_labels(affinity, num_clusters=len(sizes), seed=seed)
    theirs = SpectralClustering(len(sizes), affinity="precomputed", random_state=seed).fit_predict(affinity)
    assert adjusted_rand_score(theirs, ours) == 1.0
    assert adjusted_rand_score(truth, ours) == 1.0


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_spectral_labels_agree_with_scikit_learn_where_blocks_are_hard_to_tell_apart(seed):
    # Blocks barely above the noise: both implementations make the same imperfect partition.
    affinity, truth = block_affinity((30, 30, 30), within=0.38, between=0.3, noise=0.6, seed=seed)
    ours = spectral_labels(affinity, num_clusters=3, seed=0)
    theirs = SpectralClustering(3, affinity="precomputed", random_state=0).fit_predict(affinity)
    assert adjusted_rand_score(theirs, ours) == 1.0
    assert adjusted_rand_score(truth, ours) < 1.0          # the case is hard: neither is perfect


@pytest.mark.parametrize("sizes", [(40,), (20, 30), (25, 25, 25), (10, 40, 20, 30, 15), (12,) * 8])
def test_eigengap_finds_the_number_of_blocks(sizes):
    affinity, _ = block_affinity(sizes, within=0.7, between=0.02, noise=0.1, seed=len(sizes))
    values, _ = laplacian_spectrum(affinity)
    assert eigengap_count(values, 1, 10) == len(sizes)
    assert len(np.unique(spectral_labels(affinity, max_clusters=10))) == len(sizes)
    # A stronger background hides the blocks from the dense Laplacian; pruning to the nearest 10 % recovers them.
    noisy, _ = block_affinity(sizes, within=0.7, between=0.05, noise=0.2, seed=len(sizes))
    values, _ = laplacian_spectrum(pruned_affinity(noisy, 0.1))
    assert eigengap_count(values, 1, 10) == len(sizes)


def test_eigengap_stays_within_its_bounds():
    affinity, _ = block_affinity((20, 20, 20, 20), within=0.7, between=0.05, noise=0.2, seed=0)
    values, _ = laplacian_spectrum(affinity)
    assert eigengap_count(values, 1, 3) <= 3
    assert eigengap_count(values, 5, 8) >= 5
    assert eigengap_count(values[:3], 1, 10) <= 2          # never more clusters than eigenvalues allow


def test_laplacian_of_k_disconnected_blocks_has_k_zero_eigenvalues():
    affinity = np.kron(np.eye(3), np.ones((5, 5)))
    values, _ = laplacian_spectrum(affinity)
    np.testing.assert_allclose(values[:3], 0.0, atol=1e-10)
    assert values[3] > 0.5


def test_pruned_affinity_keeps_each_rows_nearest_neighbours_and_is_symmetric():
    emb, _ = speaker_embeddings((30, 30), spread=0.5)
    similarity = cosine_similarity(emb)
    np.testing.assert_allclose(np.diag(similarity), 1.0)
    affinity = pruned_affinity(similarity, keep_fraction=0.2)
    np.testing.assert_array_equal(affinity, affinity.T)
    assert affinity.min() >= 0
    assert ((affinity > 0).sum(axis=1) >= 12).all()                  # 20 % of 60 kept per row (and symmetrised)
    assert (affinity > 0).sum() < 0.5 * affinity.size


@pytest.mark.parametrize("method", ["spectral", "agglomerative"])
def test_cluster_embeddings_finds_the_speakers(method):
    emb, truth = speaker_embeddings((30, 12, 45, 20), spread=0.35)
    # within a speaker the mean cosine distance is 0.09-0.14, between these speakers 0.67-1.19
    labels = cluster_embeddings(emb, ClusterSettings(method=method, threshold=0.4))
    assert adjusted_rand_score(truth, labels) == 1.0
    assert labels[0] == 0 and set(labels) == {0, 1, 2, 3}            # numbered by first appearance
    forced = cluster_embeddings(emb, ClusterSettings(method=method, num_speakers=2))
    assert len(set(forced)) == 2
    bounded = cluster_embeddings(emb, ClusterSettings(method=method, max_speakers=3))
    assert len(set(bounded)) <= 3


def test_two_stage_clustering_of_many_windows_matches_the_speakers():
    emb, truth = speaker_embeddings((900, 400, 700), spread=0.5, seed=3)
    order = np.random.default_rng(0).permutation(len(truth))
    labels = cluster_embeddings(emb[order], ClusterSettings(max_dense=500, micro_clusters=100))
    assert adjusted_rand_score(truth[order], labels) > 0.99


def test_more_speakers_than_windows_is_refused_with_one_clear_message():
    emb, _ = speaker_embeddings((2, 1), spread=0.1)
    with pytest.raises(ValueError, match="num_speakers: 5 speakers asked for, but there are only 3 windows"):
        cluster_embeddings(emb, ClusterSettings(num_speakers=5))
    assert len(cluster_embeddings(emb[:1], ClusterSettings())) == 1   # one window: one speaker
    with pytest.raises(ValueError, match="clustering: expected one of spectral, agglomerative"):
        cluster_embeddings(emb, ClusterSettings(method="kmeans"))
