// mixdiff::build_info() -> str: how this library was built (JSON), read by mixdiff_ext.build_info().
#include <torch/library.h>
#include <ATen/Parallel.h>

#include <string>

namespace {

std::string build_info() {
  std::string s = "{";
  s += "\"torch_version\": \"" MIXDIFF_TORCH_VERSION "\", ";
#ifdef MIXDIFF_WITH_CUDA
  s += "\"cuda\": true, ";
#else
  s += "\"cuda\": false, ";
#endif
  s += "\"cuda_version\": \"" MIXDIFF_CUDA_VERSION "\", ";
  s += "\"cuda_archs\": \"" MIXDIFF_CUDA_ARCHS "\", ";
  s += "\"parallel\": \"" + std::string(at::get_parallel_info().find("OpenMP") != std::string::npos ? "openmp" : "native") + "\", ";
  s += "\"threads\": " + std::to_string(at::get_num_threads()) + ", ";
  s += "\"compiler\": \"" __VERSION__ "\"}";
  return s;
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(mixdiff, m) { m.def("build_info() -> str", &build_info); }
