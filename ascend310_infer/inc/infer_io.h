// Non-device parts of the Ascend 310 inference program: flags, input discovery, the .bin layout
// (ascend310_infer/BIN_FORMAT.md), shape checks and the output list file. Every failure throws
// std::runtime_error with a message that names the flag or file and what was expected.
#ifndef ECAPA_INFER_IO_H_
#define ECAPA_INFER_IO_H_

#include <cstdint>
#include <fstream>
#include <string>
#include <vector>

namespace ecapa_infer {

// Name of the list file written into the output folder (same name in src/deploy/ascend310_files.py).
extern const char kListFileName[];
// Name of the run id file of the input folder, written by preprocess.py (same name in src/deploy/ascend310_files.py).
extern const char kRunIdFileName[];

struct Options {
  std::string model_path;   // --model: exported MindIR file
  std::string input_dir;    // --input_dir: folder of input .bin files
  std::string output_dir;   // --output_dir: created if missing
  uint32_t device_id = 0;   // --device_id: Ascend device to run on
  bool help = false;        // --help
};

// Usage text for `program`.
std::string Usage(const std::string &program);

// Parse --key=value or --key value flags. Throws on an unknown flag, a missing value, a bad device id or a
// missing required flag (unless --help is given).
Options ParseOptions(int argc, const char *const *argv);

// Sorted names (not paths) of the regular *.bin files in `dir`. Throws if `dir` is not a folder or holds none.
std::vector<std::string> ListBinFiles(const std::string &dir);

// Product of the dimensions (1 for a scalar). Throws on a negative dimension.
int64_t ElementCount(const std::vector<int64_t> &shape);

// "[1, 48000]".
std::string ShapeToString(const std::vector<int64_t> &shape);

// The shape of one float32 input file of `file_bytes` bytes for a model input of `model_shape`: equal to
// `model_shape` when every dimension is fixed, else its one dynamic (-1) dimension is taken from the size.
// Throws when the size does not fit (`what` names the file in the message).
std::vector<int64_t> ResolveShape(const std::vector<int64_t> &model_shape, uint64_t file_bytes,
                                  const std::string &what);

// Size of a file in bytes; throws naming the file when it cannot be read.
uint64_t FileSize(const std::string &path);

// Read `path` as little-endian float32 values; the size must be a multiple of 4 bytes.
std::vector<float> ReadFloatFile(const std::string &path);

// Write `count` float32 values as little-endian bytes to `path`.
void WriteFloatFile(const std::string &path, const float *data, size_t count);

// Create `dir` (and parents) when missing; throws if it cannot be created or is a file.
void EnsureDir(const std::string &dir);

// `dir` / `name`.
std::string JoinPath(const std::string &dir, const std::string &name);

// The run id in <input_dir>/run_id.txt (one word, surrounding whitespace dropped), or "" when the folder has no
// such file. Throws naming the file when it is not a regular file or does not hold exactly one word.
std::string ReadRunId(const std::string &input_dir);

// Writes <output_dir>/output_list.txt: the header "# input output milliseconds", "# run_id <id>" when `run_id`
// is not empty, "<input> <output> <ms>" per file, then "# total_ms <ms> files <n>".
class ListWriter {
 public:
  explicit ListWriter(const std::string &output_dir, const std::string &run_id = "");
  void Add(const std::string &input_name, const std::string &output_name, double milliseconds);
  void Finish(double total_milliseconds);

 private:
  std::string path_;
  std::ofstream out_;
  size_t count_ = 0;
};

}  // namespace ecapa_infer

#endif  // ECAPA_INFER_IO_H_
