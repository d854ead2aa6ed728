// ECAPA-TDNN inference on Ascend 310 with the MindSpore C++ API.
//
//   ecapa_infer --model ecapa_tdnn.mindir --input_dir infer/input --output_dir infer/output --device_id 0
//
// Loads the MindIR, builds it for the Ascend device, runs every input .bin (one model input tensor each,
// BIN_FORMAT.md) and writes one output .bin per input plus output_list.txt with per-file timing, headed by the
// input folder's run id (run_id.txt) when it has one.
// Exit status: 0 on success, 2 on a usage error, 1 on any other failure (message on stderr).
#include <chrono>
#include <iostream>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include "include/api/context.h"
#include "include/api/model.h"
#include "include/api/serialization.h"
#include "include/api/types.h"
#include "infer_io.h"

namespace {

using ecapa_infer::ShapeToString;
using Clock = std::chrono::steady_clock;

double MillisecondsSince(Clock::time_point start) {
  return std::chrono::duration<double, std::milli>(Clock::now() - start).count();
}

std::string StatusText(const mindspore::Status &status) { return status.ToString(); }

// Load the MindIR and build it for Ascend device `device_id`.
void LoadAndBuild(const ecapa_infer::Options &opts, mindspore::Model *model) {
  ecapa_infer::FileSize(opts.model_path);  // a clear error for a missing model before MindSpore's own
  auto context = std::make_shared<mindspore::Context>();
  auto ascend = std::make_shared<mindspore::AscendDeviceInfo>();
  ascend->SetDeviceID(opts.device_id);
  context->MutableDeviceInfo().push_back(ascend);
#ifdef ECAPA_USE_MINDSPORE_LITE
  mindspore::Status status = model->Build(opts.model_path, mindspore::ModelType::kMindIR, context);
#else
  mindspore::Graph graph;
  mindspore::Status status = mindspore::Serialization::Load(opts.model_path, mindspore::ModelType::kMindIR, &graph);
  if (status != mindspore::kSuccess) {
    throw std::runtime_error(opts.model_path + ": cannot load it as MindIR: " + StatusText(status));
  }
  status = model->Build(mindspore::GraphCell(graph), context);
#endif
  if (status != mindspore::kSuccess) {
    throw std::runtime_error(opts.model_path + ": Model::Build failed on Ascend device " +
                             std::to_string(opts.device_id) + ": " + StatusText(status));
  }
}

// LoadAndBuild, with exceptions thrown inside MindSpore (e.g. a MindIR version it cannot read) naming the file.
void BuildModel(const ecapa_infer::Options &opts, mindspore::Model *model) {
  try {
    LoadAndBuild(opts, model);
  } catch (const std::exception &err) {
    const std::string what = err.what();
    if (what.rfind(opts.model_path, 0) == 0) throw;  // ours, already naming the file
    throw std::runtime_error(opts.model_path + ": MindSpore failed to load or build it: " + what);
  }
}

int Run(const ecapa_infer::Options &opts) {
  const std::vector<std::string> names = ecapa_infer::ListBinFiles(opts.input_dir);
  const std::string run_id = ecapa_infer::ReadRunId(opts.input_dir);
  ecapa_infer::EnsureDir(opts.output_dir);

  mindspore::Model model;
  const auto build_start = Clock::now();
  BuildModel(opts, &model);
  std::cout << "built " << opts.model_path << " on device " << opts.device_id << " in "
            << MillisecondsSince(build_start) << " ms" << std::endl;

  std::vector<mindspore::MSTensor> model_inputs = model.GetInputs();
  if (model_inputs.size() != 1) {
    throw std::runtime_error(opts.model_path + ": expected a model with 1 input, it has " +
                             std::to_string(model_inputs.size()));
  }
  const mindspore::MSTensor &model_input = model_inputs[0];
  if (model_input.DataType() != mindspore::DataType::kNumberTypeFloat32) {
    throw std::runtime_error(opts.model_path + ": expected a float32 input, the model's input has data type " +
                             std::to_string(static_cast<int>(model_input.DataType())));
  }
  const std::vector<int64_t> model_shape = model_input.Shape();
  std::cout << "model input '" << model_input.Name() << "' " << ShapeToString(model_shape)
            << " (batch size " << (model_shape.empty() ? 1 : model_shape[0]) << "), " << names.size()
            << " input files" << std::endl;

  ecapa_infer::ListWriter list(opts.output_dir, run_id);
  double total_ms = 0.0;
  for (const std::string &name : names) {
    const std::string in_path = ecapa_infer::JoinPath(opts.input_dir, name);
    const std::vector<int64_t> shape =
        ecapa_infer::ResolveShape(model_shape, ecapa_infer::FileSize(in_path), in_path);
    std::vector<float> data = ecapa_infer::ReadFloatFile(in_path);

    std::vector<mindspore::MSTensor> inputs;
    inputs.emplace_back(model_input.Name(), mindspore::DataType::kNumberTypeFloat32, shape, data.data(),
                        data.size() * sizeof(float));
    std::vector<mindspore::MSTensor> outputs;
    const auto start = Clock::now();
    const mindspore::Status status = model.Predict(inputs, &outputs);
    const double ms = MillisecondsSince(start);
    if (status != mindspore::kSuccess) {
      throw std::runtime_error(in_path + ": Predict failed: " + StatusText(status));
    }
    if (outputs.size() != 1 || outputs[0].DataType() != mindspore::DataType::kNumberTypeFloat32) {
      throw std::runtime_error(in_path + ": expected 1 float32 output, got " + std::to_string(outputs.size()));
    }
    auto host_data = outputs[0].Data();  // copies device memory to the host when needed
    ecapa_infer::WriteFloatFile(ecapa_infer::JoinPath(opts.output_dir, name),
                                static_cast<const float *>(host_data.get()),
                                static_cast<size_t>(outputs[0].ElementNum()));
    list.Add(name, name, ms);
    total_ms += ms;
    std::cout << name << " " << ShapeToString(shape) << " -> " << ShapeToString(outputs[0].Shape()) << " "
              << ms << " ms" << std::endl;
  }
  list.Finish(total_ms);
  std::cout << "total: " << names.size() << " files, " << total_ms << " ms, "
            << total_ms / static_cast<double>(names.size()) << " ms per file" << std::endl;
  return 0;
}

}  // namespace

int main(int argc, char **argv) {
  const std::string program = argc > 0 ? argv[0] : "ecapa_infer";
  ecapa_infer::Options opts;
  try {
    opts = ecapa_infer::ParseOptions(argc, argv);
  } catch (const std::exception &err) {
    std::cerr << "error: " << err.what() << "\n\n" << ecapa_infer::Usage(program);
    return 2;
  }
  if (opts.help) {
    std::cout << ecapa_infer::Usage(program);
    return 0;
  }
  try {
    return Run(opts);
  } catch (const std::exception &err) {
    std::cerr << "error: " << err.what() << std::endl;
    return 1;
  }
}
