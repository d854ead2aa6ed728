"""Timeline picture of a diarization: one row per speaker, the reference's rows beside (above) it when given."""
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from src.files import write_atomically  # noqa: E402


def _rows(ax, segments, title, colours):
    speakers = sorted({seg.speaker for seg in segments})
    for row, speaker in enumerate(speakers):
        spans = [(seg.start, seg.duration) for seg in segments if seg.speaker == speaker]
        ax.broken_barh(spans, (row - 0.4, 0.8), color=colours[row % len(colours)])
    ax.set_yticks(range(len(speakers)))
    ax.set_yticklabels(speakers, fontsize=8)
    ax.set_ylim(-0.6, max(len(speakers), 1) - 0.4)
    ax.invert_yaxis()
    ax.set_title(title, fontsize=9, loc="left")
    ax.grid(axis="x", alpha=0.3)


def plot_timeline(path, recording, segments, reference=None, seconds=None):
    """Write a PNG timeline of ``segments`` (and ``reference`` segments above them when given) -> path.
    ``seconds``: the x-axis length (default: the last segment's end)."""
    colours = plt.get_cmap("tab10").colors
    panels = [("reference", reference)] if reference is not None else []
    panels.append(("diarization", segments))
    heights = [max(len({s.speaker for s in segs}), 1) + 1 for _, segs in panels]
    fig, axes = plt.subplots(len(panels), 1, figsize=(12, 0.35 * sum(heights) + 1.2), sharex=True,
                             gridspec_kw={"height_ratios": heights}, squeeze=False)
    end = seconds or max([s.end for _, segs in panels for s in segs] + [1.0])
    for ax, (title, segs) in zip(axes[:, 0], panels):
        _rows(ax, segs, f"{recording}: {title}", colours)
        ax.set_xlim(0, end)
    axes[-1, 0].set_xlabel("time (s)")
    fig.tight_layout()
    write_atomically(path, "wb", lambda f: fig.savefig(f, format="png", dpi=100))
    plt.close(fig)
    return path
