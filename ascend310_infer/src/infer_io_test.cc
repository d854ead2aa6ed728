// Native test of the non-device parts (inc/infer_io.h): flags, input discovery, the .bin layout, shape checks,
// the run id file, the list file and the error messages. Plain asserts through CHECK; prints "infer_io_test: N checks passed".
//
//   infer_io_test SCRATCH_DIR
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iostream>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

#include "infer_io.h"

namespace fs = std::filesystem;
using namespace ecapa_infer;

static int g_checks = 0;

#define CHECK(cond)                                                                    \
  do {                                                                                 \
    ++g_checks;                                                                        \
    if (!(cond)) {                                                                     \
      std::cerr << __FILE__ << ":" << __LINE__ << ": CHECK failed: " #cond << std::endl; \
      std::exit(1);                                                                    \
    }                                                                                  \
  } while (0)

// `fn` must throw std::runtime_error whose message contains `needle`.
static void CheckThrows(const std::function<void()> &fn, const std::string &needle, int line) {
  ++g_checks;
  try {
    fn();
  } catch (const std::runtime_error &err) {
    if (std::string(err.what()).find(needle) == std::string::npos) {
      std::cerr << "line " << line << ": message '" << err.what() << "' lacks '" << needle << "'" << std::endl;
      std::exit(1);
    }
    return;
  }
  std::cerr << "line " << line << ": expected an error containing '" << needle << "'" << std::endl;
  std::exit(1);
}
#define CHECK_THROWS(expr, needle) CheckThrows([&]() { expr; }, needle, __LINE__)

static Options Parse(const std::vector<std::string> &args) {
  std::vector<const char *> argv = {"ecapa_infer"};
  for (const auto &a : args) argv.push_back(a.c_str());
  return ParseOptions(static_cast<int>(argv.size()), argv.data());
}

static void WriteBytes(const std::string &path, const std::string &bytes) {
  std::ofstream(path, std::ios::binary) << bytes;
}

static void TestFlags() {
  Options o = Parse({"--model", "m.mindir", "--input_dir=in", "--output_dir", "out", "--device_id", "3"});
  CHECK(o.model_path == "m.mindir" && o.input_dir == "in" && o.output_dir == "out" && o.device_id == 3);
  CHECK(Parse({"--model", "m", "--input_dir", "i", "--output_dir", "o"}).device_id == 0);
  CHECK(Parse({"--help"}).help);
  CHECK_THROWS(Parse({"--model", "m", "--input_dir", "i"}), "--output_dir is required");
  CHECK_THROWS(Parse({"--input_dir", "i", "--output_dir", "o"}), "--model is required");
  CHECK_THROWS(Parse({"--model", "m", "--input_dir", "i", "--output_dir", "o", "--device_id", "x1"}),
               "--device_id: expected a non-negative integer, got 'x1'");
  // The older zoo's script bug passed the data path as the device id: it must be refused, not read as 0.
  CHECK_THROWS(Parse({"--model", "m", "--input_dir", "i", "--output_dir", "o", "--device_id", "/data/vox1"}),
               "--device_id");
  CHECK_THROWS(Parse({"--model", "m", "--bogus", "1"}), "unknown flag --bogus");
  CHECK_THROWS(Parse({"--model"}), "--model: missing value");
  CHECK_THROWS(Parse({"model.mindir"}), "unexpected argument 'model.mindir'");
  CHECK(Usage("prog").find("--device_id") != std::string::npos);
}

static void TestShapes() {
  CHECK(ElementCount({2, 301, 80}) == 2 * 301 * 80);
  CHECK(ShapeToString({1, 48000}) == "[1, 48000]");
  CHECK(ResolveShape({4, 48000}, 4ull * 48000 * 4, "f") == std::vector<int64_t>({4, 48000}));
  CHECK_THROWS(ResolveShape({4, 48000}, 48000 * 4, "x.bin"), "x.bin: 192000 bytes, expected 768000");
  CHECK(ResolveShape({1, -1, 80}, 1ull * 250 * 80 * 4, "f") == std::vector<int64_t>({1, 250, 80}));
  CHECK_THROWS(ResolveShape({1, -1, 80}, 81 * 4, "y.bin"), "y.bin: 324 bytes is not a positive multiple of 320");
  CHECK_THROWS(ResolveShape({1, -1, 80}, 0, "y.bin"), "not a positive multiple");
  CHECK_THROWS(ResolveShape({-1, -1}, 16, "z.bin"), "more than one dynamic dimension");
}

static void TestFiles(const std::string &scratch) {
  const std::string in = JoinPath(scratch, "in"), out = JoinPath(scratch, "out/nested");
  fs::remove_all(scratch);
  fs::create_directories(in);
  CHECK_THROWS(ListBinFiles(in), "no .bin files");
  CHECK_THROWS(ListBinFiles(JoinPath(scratch, "missing")), "missing: not a folder");

  // Round trip, with values whose bytes pin the layout: 1.0f is 00 00 80 3f in little-endian order.
  const std::vector<float> values = {1.0f, -2.5f, 3.25e-3f, 0.0f, 1e30f, -0.0f};
  WriteFloatFile(JoinPath(in, "batch_000001.bin"), values.data(), values.size());
  std::ifstream raw(JoinPath(in, "batch_000001.bin"), std::ios::binary);
  unsigned char head[4] = {0, 0, 0, 0};
  raw.read(reinterpret_cast<char *>(head), 4);
  CHECK(head[0] == 0x00 && head[1] == 0x00 && head[2] == 0x80 && head[3] == 0x3f);
  CHECK(ReadFloatFile(JoinPath(in, "batch_000001.bin")) == values);
  CHECK(FileSize(JoinPath(in, "batch_000001.bin")) == values.size() * 4);

  WriteFloatFile(JoinPath(in, "batch_000000.bin"), values.data(), 2);
  WriteBytes(JoinPath(in, "notes.txt"), "not an input");
  WriteBytes(JoinPath(in, kRunIdFileName), "0f3a9c\n");   // preprocess.py's run id file is not an input either
  fs::create_directories(JoinPath(in, "dir.bin"));
  const std::vector<std::string> names = ListBinFiles(in);
  CHECK(names == std::vector<std::string>({"batch_000000.bin", "batch_000001.bin"}));

  WriteBytes(JoinPath(in, "odd.bin"), "abcde");
  CHECK_THROWS(ReadFloatFile(JoinPath(in, "odd.bin")), "odd.bin: 5 bytes is not a whole number of float32");
  CHECK_THROWS(ReadFloatFile(JoinPath(in, "absent.bin")), "absent.bin: not a readable file");
  CHECK_THROWS(WriteFloatFile(JoinPath(scratch, "no/such/dir/x.bin"), values.data(), 1), "cannot open it for writing");

  EnsureDir(out);
  CHECK(fs::is_directory(out));
  CHECK_THROWS(EnsureDir(JoinPath(in, "notes.txt")), "exists and is not a folder");

  ListWriter list(out);
  list.Add("batch_000000.bin", "batch_000000.bin", 1.5);
  list.Add("batch_000001.bin", "batch_000001.bin", 2.25);
  list.Finish(3.75);
  std::ifstream text(JoinPath(out, kListFileName));
  std::stringstream content;
  content << text.rdbuf();
  CHECK(content.str() ==
        "# input output milliseconds\n"
        "batch_000000.bin batch_000000.bin 1.500\n"
        "batch_000001.bin batch_000001.bin 2.250\n"
        "# total_ms 3.750 files 2\n");
}

// Reads <dir>/output_list.txt as one string.
static std::string ReadListFile(const std::string &dir) {
  std::ifstream text(JoinPath(dir, kListFileName));
  std::stringstream content;
  content << text.rdbuf();
  return content.str();
}

// The input folder's run_id.txt (preprocess.py) is copied into the list file as "# run_id <id>".
static void TestRunId(const std::string &scratch) {
  const std::string in = JoinPath(scratch, "run_in"), out = JoinPath(scratch, "run_out");
  fs::create_directories(in);
  EnsureDir(out);
  CHECK(ReadRunId(in).empty());                                   // no run_id.txt: no header line
  WriteBytes(JoinPath(in, kRunIdFileName), "  5d41402abc4b2a76b9719d911017c592\n");
  CHECK(ReadRunId(in) == "5d41402abc4b2a76b9719d911017c592");
  ListWriter list(out, ReadRunId(in));
  list.Add("batch_000000.bin", "batch_000000.bin", 1.5);
  list.Finish(1.5);
  CHECK(ReadListFile(out) ==
        "# input output milliseconds\n"
        "# run_id 5d41402abc4b2a76b9719d911017c592\n"
        "batch_000000.bin batch_000000.bin 1.500\n"
        "# total_ms 1.500 files 1\n");

  WriteBytes(JoinPath(in, kRunIdFileName), "two words\n");
  CHECK_THROWS(ReadRunId(in), "run_id.txt: expected one run id (a single word written by preprocess.py), got "
                              "'two words'");
  WriteBytes(JoinPath(in, kRunIdFileName), "\n");
  CHECK_THROWS(ReadRunId(in), "run_id.txt: expected one run id");
  fs::remove(JoinPath(in, kRunIdFileName));
  fs::create_directories(JoinPath(in, kRunIdFileName));
  CHECK_THROWS(ReadRunId(in), "run_id.txt: not a readable file");
}

int main(int argc, char **argv) {
  const std::string scratch = argc > 1 ? argv[1] : (fs::temp_directory_path() / "ecapa_infer_io_test").string();
  TestFlags();
  TestShapes();
  TestFiles(scratch);
  TestRunId(scratch);
  fs::remove_all(scratch);
  std::cout << "infer_io_test: " << g_checks << " checks passed" << std::endl;
  return 0;
}
