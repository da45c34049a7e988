// The torch side of the emulated CUDA backend (libmixdiff_emu.so, test-only; docs/architecture.md):
//  - every CPU tensor of the process is allocated from the emulated device heap (runtime.cpp), so that a
//    kernel's loads and stores are checked against the exact extent of the buffer they fall in, and new
//    buffers are poisoned (an output a kernel forgets to write is caught, not left at a previous value);
//  - mixdiff_emu::emu_configure / emu_stats set the thread order and preemption and report counters.
// The ops themselves are the *_cuda.cpp glue, compiled with MIXDIFF_CUDA_EMU (csrc/ops/dispatch.h): they
// register for the CPU key of the `mixdiff_emu` namespace, whose schemas the test harness copies from
// `mixdiff` (tests/emulated_cuda.py).
#include <c10/core/Allocator.h>
#include <c10/core/CPUAllocator.h>
#include <torch/library.h>

#include <cstring>
#include <string>
#include <vector>

#include "emu_runtime.h"

namespace mixdiff::emu {
namespace {

#if !defined(MIXDIFF_EMU_SANITIZERS)
uint8_t poison_byte() {
  const Order o = configuration().order;
  return o == Order::Forward ? 0xff : o == Order::Reverse ? 0x7f : 0xa5;
}

void heap_delete(void* p) { heap_free(p); }

struct DeviceHeapAllocator final : c10::Allocator {
  c10::DataPtr allocate(size_t n) override {
    void* p = heap_alloc(n);
    TORCH_CHECK(p || n == 0, "mixdiff_emu: the emulated device heap cannot hold ", n, " more bytes");
    if (n) std::memset(p, poison_byte(), n);
    return {p, p, &heap_delete, c10::Device(c10::DeviceType::CPU)};
  }
  c10::DeleterFnPtr raw_deleter() const override { return &heap_delete; }
  void copy_data(void* dest, const void* src, size_t count) const override { std::memcpy(dest, src, count); }
};

// Installed when the library loads (torch is loaded by then); tensors allocated before keep their own
// deleters. Priority above the default's so that it wins.
const bool g_installed = [] {
  static DeviceHeapAllocator alloc;
  c10::SetCPUAllocator(&alloc, /*priority=*/100);
  return true;
}();
#endif

void emu_configure(const std::string& order, int64_t seed, double preempt) {
  Config c;
  if (order == "forward") c.order = Order::Forward;
  else if (order == "reverse") c.order = Order::Reverse;
  else if (order == "random") c.order = Order::Random;
  else TORCH_CHECK(false, "mixdiff_emu: order must be 'forward', 'reverse' or 'random', got '", order, "'");
  TORCH_CHECK(preempt >= 0.0 && preempt <= 1.0, "mixdiff_emu: preempt must lie in [0, 1], got ", preempt);
  c.seed = static_cast<uint64_t>(seed);
  c.preempt = preempt;
  configure(c);
}

// [launches, blocks, barriers, preemptions, atomics, checked heap (1) or sanitizer build (0)]
std::vector<int64_t> emu_stats() {
  const Stats s = stats();
#if defined(MIXDIFF_EMU_SANITIZERS)
  const int64_t checked = 0;
#else
  const int64_t checked = 1;
#endif
  return {int64_t(s.launches), int64_t(s.blocks), int64_t(s.barriers), int64_t(s.preemptions), int64_t(s.atomics),
          checked};
}

}  // namespace
}  // namespace mixdiff::emu

TORCH_LIBRARY_FRAGMENT(mixdiff_emu, m) {
  m.def("emu_configure(str order, int seed, float preempt) -> ()", &mixdiff::emu::emu_configure);
  m.def("emu_stats() -> int[]", &mixdiff::emu::emu_stats);
}
