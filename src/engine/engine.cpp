#include <memory>

#include "dsv4/engine.h"
#include "dsv4/error.h"
#include "dsv4/weights.h"
#include "engine/cpu_engine.h"

namespace dsv4 {

std::unique_ptr<Engine> Engine::create(const EngineOptions& options) {
  auto weights = std::make_shared<const ModelWeights>(load_model(options.model_dir));
  switch (options.device) {
    case Device::kCpu:
      return std::make_unique<CpuEngine>(std::move(weights));
    case Device::kCuda:
      fail("the CUDA engine is not available in this build yet (use --device cpu)");
  }
  fail("unknown device");
}

}  // namespace dsv4
