"""ascend310_infer/: compile and link the real program against the MindSpore C++ API, run its native test of the
non-device parts (including the run id copied from input/run_id.txt into output_list.txt), and run the program on
its error paths (no NPU here, so a model cannot be built).

The API comes from the MindSpore 2.0.0 wheel (`build.sh --fetch-api`, 947 MB, downloaded once into the cache folder
outside the checkout, ${XDG_CACHE_HOME:-~/.cache}/ecapa-tdnn, which every clone reuses); the test skips only when
that download is impossible. Running the linked program needs libpython3.9 (libmindspore.so refers to it).
"""
import glob
import os
import shutil
import subprocess
import sys
import sysconfig

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BUILD_SH = os.path.join(ROOT, "ascend310_infer", "build.sh")


def find_libpython39():
    """Folder holding libpython3.9.so.1.0, or None."""
    candidates = []
    exe = shutil.which("python3.9")
    if exe:
        out = subprocess.run([exe, "-c", "import sysconfig; print(sysconfig.get_config_var('LIBDIR'))"],
                             capture_output=True, text=True)
        candidates.append(out.stdout.strip())
    candidates += [sysconfig.get_config_var("LIBDIR") or "", "/usr/lib/x86_64-linux-gnu", "/usr/local/lib"]
    candidates += sorted(glob.glob(os.path.expanduser("~/.pyenv/versions/3.9*/lib")))
    for folder in candidates:
        if folder and os.path.isfile(os.path.join(folder, "libpython3.9.so.1.0")):
            return folder
    return None


@pytest.fixture(scope="module")
def build_dir(tmp_path_factory):
    if shutil.which("cmake") is None or shutil.which("c++") is None:
        pytest.fail("cmake and a C++17 compiler are needed to build ascend310_infer")
    out = tmp_path_factory.mktemp("ascend310_build")
    env = dict(os.environ, PYTHON=sys.executable, BUILD_DIR=str(out))
    env.pop("MINDSPORE_PATH", None)
    proc = subprocess.run(["bash", BUILD_SH, "--fetch-api"], capture_output=True, text=True, env=env)
    if proc.returncode == 3:
        pytest.skip(f"could not download mindspore==2.0.0 for its C++ API (no network?): {proc.stderr[-300:]}")
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    assert os.path.isfile(out / "ecapa_infer") and os.path.isfile(out / "infer_io_test")
    return out


@pytest.fixture(scope="module")
def run_program(build_dir):
    libdir = find_libpython39()
    if libdir is None:
        pytest.skip("no libpython3.9.so.1.0 on this machine: MindSpore 2.0.0's libmindspore.so needs it to load")
    env = dict(os.environ, LD_LIBRARY_PATH=libdir + os.pathsep + os.environ.get("LD_LIBRARY_PATH", ""))

    def run(*args):
        return subprocess.run([str(build_dir / "ecapa_infer"), *args], capture_output=True, text=True, env=env)
    return run


def test_native_test_of_non_device_parts(build_dir, tmp_path):
    proc = subprocess.run([str(build_dir / "infer_io_test"), str(tmp_path / "scratch")], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "checks passed" in proc.stdout


def test_program_links_the_mindspore_api(build_dir):
    symbols = subprocess.run(["nm", "-D", "--undefined-only", str(build_dir / "ecapa_infer")], capture_output=True,
                             text=True).stdout
    # Serialization::Load, Model::Build and Model::Predict come from libmindspore.so.
    assert "Serialization4Load" in symbols and "Model5Build" in symbols and "Model7Predict" in symbols


def test_usage_errors_exit_2(run_program, tmp_path):
    proc = run_program()
    assert proc.returncode == 2 and "--model is required" in proc.stderr and "Usage:" in proc.stderr
    proc = run_program("--model", "m", "--input_dir", "i", "--output_dir", "o", "--device_id", "/data/vox1")
    assert proc.returncode == 2 and "--device_id: expected a non-negative integer" in proc.stderr
    proc = run_program("--model", "m", "--input_dir", "i", "--output_dir", "o", "--threads", "4")
    assert proc.returncode == 2 and "unknown flag --threads" in proc.stderr
    proc = run_program("--help")
    assert proc.returncode == 0 and "--device_id" in proc.stdout


def test_runtime_errors_exit_1_with_the_file_named(run_program, tmp_path):
    inputs = tmp_path / "in"
    inputs.mkdir()
    (inputs / "batch_000000.bin").write_bytes(b"\0" * 16)
    out = str(tmp_path / "out")
    proc = run_program("--model", str(tmp_path / "m.mindir"), "--input_dir", str(tmp_path / "nope"), "--output_dir", out)
    assert proc.returncode == 1 and f"--input_dir {tmp_path / 'nope'}: not a folder" in proc.stderr
    proc = run_program("--model", str(tmp_path / "m.mindir"), "--input_dir", str(inputs), "--output_dir", out)
    assert proc.returncode == 1 and f"{tmp_path / 'm.mindir'}: not a readable file" in proc.stderr
    (tmp_path / "m.mindir").write_bytes(b"this is not a MindIR protobuf")
    proc = run_program("--model", str(tmp_path / "m.mindir"), "--input_dir", str(inputs), "--output_dir", out,
                       "--device_id", "1")
    assert proc.returncode == 1 and "m.mindir: cannot load it as MindIR" in proc.stderr
    (inputs / "run_id.txt").write_text("two words\n")                    # read before the model is loaded
    proc = run_program("--model", str(tmp_path / "m.mindir"), "--input_dir", str(inputs), "--output_dir", out)
    assert proc.returncode == 1 and f"{inputs / 'run_id.txt'}: expected one run id" in proc.stderr
