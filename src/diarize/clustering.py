"""Who is who: cluster window embeddings into speakers.

Two methods over the cosine similarity of the embeddings:

- ``spectral``: the affinity is pruned to each window's nearest neighbours and symmetrised; the normalised graph
  Laplacian's eigenvalues give the number of speakers (the largest gap between consecutive eigenvalues, the
  "eigengap") and its eigenvectors an embedding in which k-means finds the speakers (Ng, Jordan and Weiss 2002;
  the p-pruning of Park et al. 2019). Robust when every speaker has many windows.
- ``agglomerative``: average-linkage clustering of the cosine distances (SciPy), cut at a distance threshold or
  at the requested number of speakers. Needs no graph, so it also works with a handful of windows.

Recordings with more windows than ``max_dense`` are clustered in two stages so memory stays bounded: k-means
(``micro_clusters`` centroids, memory linear in the windows) first, then the chosen method on the centroids, each
window taking its centroid's speaker.

Example::

    rng = np.random.default_rng(0)
    centres = rng.standard_normal((3, 16))
    emb = np.repeat(centres, 20, axis=0) + 0.3 * rng.standard_normal((60, 16))
    labels = cluster_embeddings(emb, ClusterSettings())          # (60,) int, 3 distinct values
"""
import dataclasses

import numpy as np
from scipy.cluster.hierarchy import fcluster, linkage
from scipy.cluster.vq import kmeans2

METHODS = ("spectral", "agglomerative")


@dataclasses.dataclass(frozen=True)
class ClusterSettings:
    """method: "spectral" or "agglomerative"; num_speakers: the number of speakers when known (0: estimated);
    min_speakers, max_speakers: bounds of the estimate; pruning: fraction of each window's most similar windows the
    spectral affinity keeps; threshold: cosine distance at which agglomerative clustering stops merging;
    max_dense: most windows clustered at once (more: two stages); micro_clusters: first-stage centroids;
    seed: k-means initialisation."""
    method: str = "spectral"
    num_speakers: int = 0
    min_speakers: int = 1
    max_speakers: int = 10
    pruning: float = 0.1
    threshold: float = 0.7
    max_dense: int = 3000
    micro_clusters: int = 600
    seed: int = 0


def cosine_similarity(embeddings):
    """(N, D) -> (N, N) float64 cosine similarities."""
    x = np.asarray(embeddings, np.float64)
    x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    return x @ x.T


def pruned_affinity(similarity, keep_fraction, min_neighbours=6):
    """Keep each row's ``keep_fraction`` largest similarities (at least ``min_neighbours``), zero the rest and the
    negatives, symmetrise -> (N, N) non-negative symmetric affinity."""
    n = similarity.shape[0]
    keep = min(n, max(int(np.ceil(keep_fraction * n)), min_neighbours))
    affinity = np.zeros_like(similarity)
    top = np.argpartition(-similarity, keep - 1, axis=1)[:, :keep]
    rows = np.arange(n)[:, None]
    affinity[rows, top] = np.maximum(similarity[rows, top], 0.0)
    return 0.5 * (affinity + affinity.T)


def laplacian_spectrum(affinity):
    """Eigenvalues (ascending) and eigenvectors of the normalised Laplacian I - D^-1/2 A D^-1/2 of a symmetric
    non-negative (N, N) affinity."""
    degree = affinity.sum(axis=1)
    inv_sqrt = 1.0 / np.sqrt(np.maximum(degree, 1e-12))
    laplacian = np.eye(len(affinity)) - inv_sqrt[:, None] * affinity * inv_sqrt[None, :]
    values, vectors = np.linalg.eigh(laplacian)
    return values, vectors


def eigengap_count(eigenvalues, min_count=1, max_count=10):
    """Number of clusters from ascending Laplacian eigenvalues: the k in [min_count, max_count] with the largest gap
    eigenvalues[k] - eigenvalues[k - 1] (k clusters give k eigenvalues near 0, then a jump)."""
    max_count = min(max_count, len(eigenvalues) - 1)
    if max_count <= min_count:
        return max(1, min(min_count, len(eigenvalues)))
    gaps = np.diff(eigenvalues[:max_count + 1])            # gaps[k - 1] = value[k] - value[k - 1]
    return int(min_count + np.argmax(gaps[min_count - 1:max_count]))


def kmeans_plus_plus(points, k, rng):
    """k-means++ seeding -> (k, D) initial centres, in O(k N D): each new centre is drawn with probability
    proportional to its squared distance from the nearest centre so far, a distance kept up to date row by row
    (scipy's own ``minit="++"`` recomputes all distances per centre, O(k^2 N D), too slow for 600 centres)."""
    centres = np.empty((k, points.shape[1]))
    centres[0] = points[rng.integers(len(points))]
    nearest = ((points - centres[0]) ** 2).sum(axis=1)
    for i in range(1, k):
        total = nearest.sum()
        pick = rng.choice(len(points), p=nearest / total) if total > 0 else rng.integers(len(points))
        centres[i] = points[pick]
        nearest = np.minimum(nearest, ((points - centres[i]) ** 2).sum(axis=1))
    return centres


def kmeans(points, k, seed=0, restarts=10):
    """k-means++ with ``restarts`` starts; the labels of the lowest within-cluster sum of squares -> (N,) int."""
    rng = np.random.default_rng(seed)
    best, best_cost = None, np.inf
    for _ in range(restarts):
        centres, labels = kmeans2(points, k, minit="++", seed=rng)
        cost = float(((points - centres[labels]) ** 2).sum())
        if cost < best_cost:
            best, best_cost = labels, cost
    return best


def spectral_labels(affinity, num_clusters=0, min_clusters=1, max_clusters=10, seed=0):
    """Spectral clustering of a precomputed (N, N) affinity -> (N,) int labels. ``num_clusters`` 0: the eigengap
    estimate within [min_clusters, max_clusters]. k-means clusters the rows of U (the eigenvectors of the k smallest
    eigenvalues) scaled to unit length; scikit-learn's SpectralClustering(affinity="precomputed") clusters the
    rows of D^-1/2 U, the same directions at other lengths."""
    values, vectors = laplacian_spectrum(affinity)
    k = num_clusters or eigengap_count(values, min_clusters, max_clusters)
    if k == 1:
        return np.zeros(len(affinity), int)
    embedding = vectors[:, :k].copy()
    embedding /= np.maximum(np.linalg.norm(embedding, axis=1, keepdims=True), 1e-12)
    return kmeans(embedding, k, seed)


def agglomerative_labels(embeddings, num_clusters=0, threshold=0.7, min_clusters=1, max_clusters=10):
    """Average-linkage clustering of cosine distances -> (N,) int labels: ``num_clusters`` clusters, or (0) the
    clusters below distance ``threshold``, their count held within [min_clusters, max_clusters]."""
    x = np.asarray(embeddings, np.float64)
    if len(x) == 1:
        return np.zeros(1, int)
    tree = linkage(x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12), method="average",
                   metric="cosine")
    if not num_clusters:
        labels = fcluster(tree, threshold, criterion="distance")
        count = len(np.unique(labels))
        if min_clusters <= count <= max_clusters:
            return labels - 1
        num_clusters = min(max(count, min_clusters), max_clusters)
    return fcluster(tree, min(num_clusters, len(x)), criterion="maxclust") - 1


def _cluster_dense(embeddings, settings, weights=None):
    """One stage of the chosen method on (N, D) embeddings."""
    bounds = dict(min_clusters=settings.min_speakers, max_clusters=settings.max_speakers)
    if settings.method == "agglomerative":
        return agglomerative_labels(embeddings, settings.num_speakers, settings.threshold, **bounds)
    affinity = pruned_affinity(cosine_similarity(embeddings), settings.pruning)
    if weights is not None:                  # a centroid stands for as many windows as it holds
        affinity = affinity * np.sqrt(weights[:, None] * weights[None, :])
    return spectral_labels(affinity, settings.num_speakers, seed=settings.seed, **bounds)


def cluster_embeddings(embeddings, settings):
    """Window embeddings (N, D) -> speaker labels (N,) int, numbered 0.. in order of first appearance.

    Raises ValueError when ``settings.num_speakers`` exceeds the number of windows, or the method is unknown.
    """
    if settings.method not in METHODS:
        raise ValueError(f"clustering: expected one of {', '.join(METHODS)}, got {settings.method!r}")
    n = len(embeddings)
    if settings.num_speakers > n:
        raise ValueError(f"num_speakers: {settings.num_speakers} speakers asked for, but there are only {n} windows "
                         f"of speech to share among them")
    if n == 0:
        return np.zeros(0, int)
    bounded = dataclasses.replace(settings, max_speakers=max(1, min(settings.max_speakers, n)),
                                  min_speakers=min(settings.min_speakers, n))
    if n <= settings.max_dense:
        labels = _cluster_dense(embeddings, bounded)
    else:
        x = np.asarray(embeddings, np.float64)
        x /= np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
        rng = np.random.default_rng(settings.seed)
        centres, micro = kmeans2(x, kmeans_plus_plus(x, settings.micro_clusters, rng), minit="matrix", seed=rng)
        used = np.unique(micro)
        weights = np.bincount(micro, minlength=len(centres))[used].astype(np.float64)
        centre_labels = np.zeros(len(centres), int)
        centre_labels[used] = _cluster_dense(centres[used], bounded, weights / weights.mean())
        labels = centre_labels[micro]
    return first_appearance_order(labels)


def first_appearance_order(labels):
    """Relabel so that speakers are numbered 0, 1, ... in order of first appearance."""
    labels = np.asarray(labels)
    _, first = np.unique(labels, return_index=True)
    order = labels[np.sort(first)]
    mapping = {old: new for new, old in enumerate(order)}
    return np.array([mapping[v] for v in labels], int)
