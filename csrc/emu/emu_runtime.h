#pragma once
// Control of the emulated CUDA device (csrc/emu/runtime.cpp), for the torch side of the emulated
// backend (emu_library.cpp): the thread order, preemption, the device heap and counters.
#include <cstddef>
#include <cstdint>

namespace mixdiff::emu {

enum class Order { Forward, Reverse, Random };

struct Config {
  Order order = Order::Forward;  // in which the runnable threads of a block (and the blocks) are resumed
  uint64_t seed = 0;             // of the random order and the preemption draws
  double preempt = 0.0;          // probability that a shared-memory access yields to the other threads
};
void configure(const Config& config);
Config configuration();

struct Stats {
  uint64_t launches = 0, blocks = 0, barriers = 0, preemptions = 0, atomics = 0;
};
Stats stats();

// Device memory: checked extents in one reserved window, an untouched gap after each buffer.
void* heap_alloc(size_t bytes);
void heap_free(void* p);

}  // namespace mixdiff::emu
