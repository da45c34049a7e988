// The emulated "cuda" device as torch itself sees it (libmixdiff_emu_device.so, test-only): a device guard
// (torch's no-op test guard) and CUDA hooks that report one built, available device. The test harness's
// tensors report device cuda (tests/emulated_cuda.py), and torch's C++ paths ask for that device before
// they dispatch to the harness: device guards, the autograd engine's per-device streams.
//
// torch creates its CUDA hooks once, while `import torch` initialises, so this library must be loaded
// before that: `make emu-test` puts it in LD_PRELOAD (it needs only c10 and torch_cpu).
#include <ATen/detail/CUDAHooksInterface.h>
#include <c10/core/impl/FakeGuardImpl.h>

namespace mixdiff::emu {
namespace {

C10_REGISTER_GUARD_IMPL(CUDA, c10::impl::FakeGuardImpl<c10::DeviceType::CUDA>);

struct EmuCudaHooks final : at::CUDAHooksInterface {
  explicit EmuCudaHooks(at::CUDAHooksArgs) {}
  void init() const override {}
  bool isBuilt() const override { return true; }
  bool isAvailable() const override { return true; }
  bool hasCUDA() const override { return true; }
  bool hasPrimaryContext(c10::DeviceIndex) const override { return true; }
  int getNumGPUs() const override { return 1; }
  c10::DeviceIndex deviceCount() const override { return 1; }
  c10::DeviceIndex current_device() const override { return 0; }
  c10::DeviceIndex getCurrentDevice() const override { return 0; }
};

}  // namespace
}  // namespace mixdiff::emu

namespace at {
// Under the key getCUDAHooks() looks up; torch's CPU build registers none.
C10_REGISTER_TYPED_CLASS(CUDAHooksRegistry, "CUDAHooks", mixdiff::emu::EmuCudaHooks)
}  // namespace at
