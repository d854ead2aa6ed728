// Non-device parts of the Ascend 310 inference program (see inc/infer_io.h and BIN_FORMAT.md).
#include "infer_io.h"

#include <algorithm>
#include <cctype>
#include <cstring>
#include <filesystem>
#include <iomanip>
#include <sstream>
#include <stdexcept>

namespace fs = std::filesystem;

namespace ecapa_infer {

const char kListFileName[] = "output_list.txt";
const char kRunIdFileName[] = "run_id.txt";

namespace {

bool HostIsLittleEndian() {
  const uint16_t probe = 1;
  unsigned char first = 0;
  std::memcpy(&first, &probe, 1);
  return first == 1;
}

void RequireLittleEndianHost() {
  if (!HostIsLittleEndian()) {
    throw std::runtime_error("this host is big-endian; the .bin files are little-endian float32 (BIN_FORMAT.md)");
  }
}

uint32_t ParseDeviceId(const std::string &text) {
  if (text.empty() || text.size() > 9 || !std::all_of(text.begin(), text.end(), ::isdigit)) {
    throw std::runtime_error("--device_id: expected a non-negative integer, got '" + text + "'");
  }
  return static_cast<uint32_t>(std::stoul(text));
}

}  // namespace

std::string Usage(const std::string &program) {
  std::ostringstream s;
  s << "Usage: " << program << " --model FILE.mindir --input_dir DIR --output_dir DIR [--device_id N]\n"
    << "  Runs an exported ECAPA-TDNN MindIR on every DIR/*.bin (float32 little-endian, the model's input\n"
    << "  shape; see ascend310_infer/BIN_FORMAT.md) and writes one output .bin per input plus "
    << kListFileName << ".\n"
    << "  --model       exported MindIR file\n"
    << "  --input_dir   folder of input .bin files (written by preprocess.py)\n"
    << "  --output_dir  folder for the output .bin files (created if missing)\n"
    << "  --device_id   Ascend device id (default 0)\n";
  return s.str();
}

Options ParseOptions(int argc, const char *const *argv) {
  Options opts;
  bool have_model = false, have_input = false, have_output = false;
  for (int i = 1; i < argc; ++i) {
    std::string arg = argv[i];
    if (arg == "--help" || arg == "-h") {
      opts.help = true;
      continue;
    }
    if (arg.rfind("--", 0) != 0) {
      throw std::runtime_error("unexpected argument '" + arg + "': flags are written --key value or --key=value");
    }
    std::string key = arg.substr(2), value;
    const size_t eq = key.find('=');
    if (eq != std::string::npos) {
      value = key.substr(eq + 1);
      key = key.substr(0, eq);
    } else {
      if (i + 1 >= argc) throw std::runtime_error("--" + key + ": missing value");
      value = argv[++i];
    }
    if (key == "model") {
      opts.model_path = value;
      have_model = !value.empty();
    } else if (key == "input_dir") {
      opts.input_dir = value;
      have_input = !value.empty();
    } else if (key == "output_dir") {
      opts.output_dir = value;
      have_output = !value.empty();
    } else if (key == "device_id") {
      opts.device_id = ParseDeviceId(value);
    } else {
      throw std::runtime_error("unknown flag --" + key + " (known: --model, --input_dir, --output_dir, --device_id)");
    }
  }
  if (opts.help) return opts;
  if (!have_model) throw std::runtime_error("--model is required (the exported MindIR file)");
  if (!have_input) throw std::runtime_error("--input_dir is required (the folder of input .bin files)");
  if (!have_output) throw std::runtime_error("--output_dir is required (where output .bin files go)");
  return opts;
}

std::vector<std::string> ListBinFiles(const std::string &dir) {
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) {
    throw std::runtime_error("--input_dir " + dir + ": not a folder");
  }
  std::vector<std::string> names;
  for (const auto &entry : fs::directory_iterator(dir, ec)) {
    if (entry.is_regular_file() && entry.path().extension() == ".bin") {
      names.push_back(entry.path().filename().string());
    }
  }
  if (ec) throw std::runtime_error("--input_dir " + dir + ": cannot list it: " + ec.message());
  if (names.empty()) throw std::runtime_error("--input_dir " + dir + ": no .bin files in it");
  std::sort(names.begin(), names.end());
  return names;
}

int64_t ElementCount(const std::vector<int64_t> &shape) {
  int64_t count = 1;
  for (int64_t d : shape) {
    if (d < 0) throw std::runtime_error("shape " + ShapeToString(shape) + " has a dynamic dimension");
    count *= d;
  }
  return count;
}

std::string ShapeToString(const std::vector<int64_t> &shape) {
  std::ostringstream s;
  s << "[";
  for (size_t i = 0; i < shape.size(); ++i) s << (i ? ", " : "") << shape[i];
  s << "]";
  return s.str();
}

std::vector<int64_t> ResolveShape(const std::vector<int64_t> &model_shape, uint64_t file_bytes,
                                  const std::string &what) {
  const uint64_t elem = sizeof(float);
  int dynamic_axis = -1;
  uint64_t fixed = 1;
  for (size_t i = 0; i < model_shape.size(); ++i) {
    if (model_shape[i] < 0) {
      if (dynamic_axis >= 0) {
        throw std::runtime_error("model input shape " + ShapeToString(model_shape) +
                                 " has more than one dynamic dimension; export it with a fixed batch size");
      }
      dynamic_axis = static_cast<int>(i);
    } else {
      fixed *= static_cast<uint64_t>(model_shape[i]);
    }
  }
  std::vector<int64_t> shape = model_shape;
  if (dynamic_axis < 0) {
    if (file_bytes != fixed * elem) {
      throw std::runtime_error(what + ": " + std::to_string(file_bytes) + " bytes, expected " +
                               std::to_string(fixed * elem) + " (float32 " + ShapeToString(model_shape) +
                               ", the model's input shape)");
    }
    return shape;
  }
  const uint64_t row = fixed * elem;
  if (row == 0 || file_bytes == 0 || file_bytes % row != 0) {
    throw std::runtime_error(what + ": " + std::to_string(file_bytes) + " bytes is not a positive multiple of " +
                             std::to_string(row) + " (float32 " + ShapeToString(model_shape) +
                             " with the dynamic dimension taken from the file size)");
  }
  shape[dynamic_axis] = static_cast<int64_t>(file_bytes / row);
  return shape;
}

uint64_t FileSize(const std::string &path) {
  std::error_code ec;
  if (!fs::is_regular_file(path, ec)) throw std::runtime_error(path + ": not a readable file");
  const uint64_t size = fs::file_size(path, ec);
  if (ec) throw std::runtime_error(path + ": cannot read its size: " + ec.message());
  return size;
}

std::vector<float> ReadFloatFile(const std::string &path) {
  RequireLittleEndianHost();
  const uint64_t size = FileSize(path);
  if (size % sizeof(float) != 0) {
    throw std::runtime_error(path + ": " + std::to_string(size) + " bytes is not a whole number of float32 values");
  }
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::runtime_error(path + ": cannot open it for reading");
  std::vector<float> data(size / sizeof(float));
  in.read(reinterpret_cast<char *>(data.data()), static_cast<std::streamsize>(size));
  if (!in || static_cast<uint64_t>(in.gcount()) != size) {
    throw std::runtime_error(path + ": read failed after " + std::to_string(in.gcount()) + " of " +
                             std::to_string(size) + " bytes");
  }
  return data;
}

void WriteFloatFile(const std::string &path, const float *data, size_t count) {
  RequireLittleEndianHost();
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  if (!out) throw std::runtime_error(path + ": cannot open it for writing");
  out.write(reinterpret_cast<const char *>(data), static_cast<std::streamsize>(count * sizeof(float)));
  out.close();
  if (!out) throw std::runtime_error(path + ": write failed");
}

void EnsureDir(const std::string &dir) {
  std::error_code ec;
  if (fs::is_directory(dir, ec)) return;
  if (fs::exists(dir, ec)) throw std::runtime_error("--output_dir " + dir + ": exists and is not a folder");
  fs::create_directories(dir, ec);
  if (ec) throw std::runtime_error("--output_dir " + dir + ": cannot create it: " + ec.message());
}

std::string JoinPath(const std::string &dir, const std::string &name) {
  return (fs::path(dir) / name).string();
}

std::string ReadRunId(const std::string &input_dir) {
  const std::string path = JoinPath(input_dir, kRunIdFileName);
  std::error_code ec;
  if (!fs::exists(path, ec)) return "";
  if (!fs::is_regular_file(path, ec)) throw std::runtime_error(path + ": not a readable file");
  std::ifstream in(path);
  if (!in) throw std::runtime_error(path + ": cannot open it for reading");
  std::stringstream content;
  content << in.rdbuf();
  std::string text = content.str();
  const auto is_space = [](unsigned char c) { return std::isspace(c) != 0; };
  text.erase(text.begin(), std::find_if_not(text.begin(), text.end(), is_space));
  text.erase(std::find_if_not(text.rbegin(), text.rend(), is_space).base(), text.end());
  if (text.empty() || std::any_of(text.begin(), text.end(), is_space)) {
    throw std::runtime_error(path + ": expected one run id (a single word written by preprocess.py), got '" +
                             text + "'");
  }
  return text;
}

ListWriter::ListWriter(const std::string &output_dir, const std::string &run_id)
    : path_(JoinPath(output_dir, kListFileName)), out_(path_, std::ios::trunc) {
  if (!out_) throw std::runtime_error(path_ + ": cannot open it for writing");
  out_ << "# input output milliseconds\n";
  if (!run_id.empty()) out_ << "# run_id " << run_id << "\n";
}

void ListWriter::Add(const std::string &input_name, const std::string &output_name, double milliseconds) {
  out_ << input_name << " " << output_name << " " << std::fixed << std::setprecision(3) << milliseconds << "\n";
  ++count_;
}

void ListWriter::Finish(double total_milliseconds) {
  out_ << "# total_ms " << std::fixed << std::setprecision(3) << total_milliseconds << " files " << count_ << "\n";
  out_.close();
  if (!out_) throw std::runtime_error(path_ + ": write failed");
}

}  // namespace ecapa_infer
