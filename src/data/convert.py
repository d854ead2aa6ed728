"""Convert an M4A/AAC tree (VoxCeleb2 as distributed) to 16 kHz mono 16-bit WAV, keeping the relative paths.

    python -m src.data.convert --src /data/voxceleb2/dev/aac --dst /data/voxceleb2/dev/wav --num_workers 8

``<src>/<speaker>/<video>/<utt>.m4a`` becomes ``<dst>/<speaker>/<video>/<utt>.wav``. Needs ``ffmpeg`` on PATH.
Training reads M4A directly too (ffmpeg decodes the whole file for every crop), but WAV is read many times faster.
Each file is written under a temporary name and renamed when complete, and files already converted are skipped,
so an interrupted run can simply be started again. Files that fail are listed; the exit status is then 1.
"""
import os
import subprocess
import sys
from contextlib import nullcontext
from multiprocessing import Pool

from tqdm import tqdm

from src.cli import run_command
from src.config import ArgumentParser
from src.data.audio import FFMPEG_EXTENSIONS, ffmpeg_available
from src.data.lists import find_audio_files


def convert_file(job):
    """``(src_path, dst_path, sample_rate)`` -> None on success (or when dst exists), else an error message."""
    src, dst, sample_rate = job
    if os.path.isfile(dst):
        return None
    os.makedirs(os.path.dirname(dst), exist_ok=True)
    partial = os.path.join(os.path.dirname(dst), f".{os.path.basename(dst)}.partial")
    result = subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-y", "-i", src, "-ac", "1", "-ar",
                             str(sample_rate), "-c:a", "pcm_s16le", "-f", "wav", partial],
                            capture_output=True, text=True)
    if result.returncode != 0:
        if os.path.exists(partial):
            os.remove(partial)
        return f"{src}: ffmpeg failed: {result.stderr.strip()[-300:]}"
    os.replace(partial, dst)
    return None


def convert_tree(src_dir, dst_dir, sample_rate=16000, num_workers=1, progress=True):
    """Convert every M4A/AAC file three levels below ``src_dir`` -> (number of files, list of error messages)."""
    rel_paths = [p for p in find_audio_files(src_dir) if p.lower().endswith(FFMPEG_EXTENSIONS)]
    if not rel_paths:
        raise FileNotFoundError(f"{src_dir}: no .m4a/.aac files at <speaker>/<video>/<utt> depth")
    if not ffmpeg_available():
        raise FileNotFoundError("ffmpeg is not installed (e.g. apt-get install ffmpeg); it is needed to decode "
                                "M4A/AAC files")
    jobs = [(os.path.join(src_dir, rel), os.path.join(dst_dir, os.path.splitext(rel)[0] + ".wav"), sample_rate)
            for rel in rel_paths]
    with Pool(num_workers) if num_workers > 1 else nullcontext() as pool:
        done = pool.imap(convert_file, jobs, chunksize=16) if pool else map(convert_file, jobs)
        results = list(tqdm(done, total=len(jobs), desc="converting", disable=not progress))
    return len(jobs), [r for r in results if r is not None]


def main(argv=None):
    parser = ArgumentParser(description="Convert an M4A/AAC <speaker>/<video>/<utt> tree to WAV.")
    parser.add_argument("--src", required=True, help="folder with <speaker>/<video>/<utt>.m4a")
    parser.add_argument("--dst", required=True, help="folder for <speaker>/<video>/<utt>.wav")
    parser.add_argument("--sample_rate", type=int, default=16000)
    parser.add_argument("--num_workers", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args(argv)
    total, errors = convert_tree(args.src, args.dst, args.sample_rate, max(1, args.num_workers))
    for message in errors:
        print(message, file=sys.stderr)
    print(f"{total - len(errors)} of {total} files are WAV in {args.dst}" + (f"; {len(errors)} failed" if errors
                                                                              else ""))
    return 1 if errors else 0


if __name__ == "__main__":
    run_command(main)
