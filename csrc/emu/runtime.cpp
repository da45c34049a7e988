// The emulated CUDA execution model (see cuda_runtime.h). Not instrumented itself: only the kernels'
// translation units report their memory accesses here.
//
// - Device memory: every CPU allocation of the process comes from one reserved address window
//   (emu_library.cpp installs the allocator), each buffer followed by an untouched gap, so a kernel's
//   access is checked against the exact extent of a live buffer: one element past the end fails.
// - A block: blockDim threads as fibers (ucontext) on the launching OS thread. The scheduler resumes
//   the runnable threads in the configured order (forward, reversed, or seeded random, reshuffled at
//   every pass) until each one waits at __syncthreads, waits in a warp shuffle, or exits; a barrier is
//   released when every thread of the block waits at the same one. With preemption on, a shared-memory
//   load yields with the configured probability, so a read-modify-write that is not an atomic can lose
//   updates as it would on a GPU. Blocks run one after another in the same order rule.
// - Shared memory: a per-thread window with the block's static declarations and its dynamic allocation
//   of exactly the launch's size, both poisoned with an order-dependent pattern at block start.
// - Errors (out-of-bounds access, divergent barrier, bad shuffle mask, too much shared memory, bad launch
//   configuration) stop the launch; cudaGetLastError returns the code and cudaGetErrorString a message
//   naming the kernel, block, thread, access and source line.
#include "emu_runtime.h"

#include <dlfcn.h>
#include <sys/mman.h>
#include <ucontext.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cstring>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <mutex>
#include <string>
#include <unordered_map>
#include <vector>

#include "cuda_runtime.h"

#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/common_interface_defs.h>
#endif

namespace mixdiff::emu {

namespace {

// ---- configuration and counters --------------------------------------------------------------------
Config g_config;
Stats g_stats;
std::mutex g_launch_mutex;  // one emulated device, one kernel at a time

constexpr int kSms = 3;                      // few and odd: grid-stride loops take several uneven strides
constexpr int kSmemDefault = 48 * 1024;      // without cudaFuncSetAttribute, as on every GPU
constexpr int kSmemOptin = 227 * 1024;       // H100 / H200
constexpr int kMaxThreads = 1024;
constexpr size_t kStackBytes = 256 * 1024;

std::mutex g_attr_mutex;
std::unordered_map<const void*, int> g_smem_limit;  // kernel -> raised dynamic shared-memory limit

uint64_t splitmix(uint64_t& s) {
  uint64_t z = (s += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

// ---- device memory: one reserved window -------------------------------------------------------------
constexpr size_t kWindowBytes = size_t(1) << 40;  // address space only (MAP_NORESERVE)
constexpr size_t kPage = 4096;
constexpr size_t kGap = 64 * 1024;  // untouched bytes after every buffer
constexpr uintptr_t kNullPage = 1 << 20;  // accesses below: through a null pointer

struct Heap {
  std::mutex mutex;
  uintptr_t base = 0, next = 0;
  std::map<uintptr_t, size_t> live;                      // begin -> exact size
  std::unordered_map<size_t, std::vector<uintptr_t>> free_slots;  // slot bytes -> slots
  std::unordered_map<uintptr_t, size_t> slot_of;         // begin -> slot bytes
};
Heap& heap() {
  static Heap h;
  return h;
}
std::atomic<uintptr_t> g_heap_lo{0}, g_heap_hi{0};

bool in_heap(uintptr_t a) { return a >= g_heap_lo.load(std::memory_order_relaxed) && a < g_heap_hi.load(std::memory_order_relaxed); }

// ---- blocks and threads -----------------------------------------------------------------------------
enum class State { Ready, Barrier, Shuffle, Done };

struct Thread {
  ucontext_t ctx;
  uint3 idx;
  int linear = 0;
  State state = State::Ready;
  const void* site = nullptr;  // barrier or shuffle call site
  unsigned mask = 0, delta = 0;
  int width = 32;
  uint64_t bits = 0, result = 0;
};

constexpr size_t kStaticBytes = 64 * 1024;
constexpr size_t kDynamicAt = 2 * kStaticBytes;
constexpr size_t kSharedWindow = kDynamicAt + kSmemOptin + kGap;

struct Launch {
  const LaunchConfig* cfg;
  const char* name;
  void (*entry)(void*);
  void* ctx;
  int threads;
  size_t smem_limit;
  uint3 block;
  std::vector<Thread> t;
  std::vector<char*> stacks;
  ucontext_t sched;
  const void* sched_stack = nullptr;  // the launching thread's stack (AddressSanitizer build)
  size_t sched_stack_size = 0;
  Thread* cur = nullptr;
  unsigned char* shared = nullptr;  // the shared window
  size_t static_used = 0;
  std::vector<std::pair<const void*, size_t>> static_sites;  // call site -> offset
  uint64_t rng = 0;
  bool failed = false;
  std::string error;
  cudaError_t code = cudaSuccess;
  // recently hit device buffers [begin, end)
  std::array<std::pair<uintptr_t, uintptr_t>, 8> recent{};
  int recent_next = 0;
};

thread_local Launch* t_launch = nullptr;

// swapcontext, announced to AddressSanitizer in the sanitizer build (it tracks the current stack).
void switch_context(ucontext_t* from, ucontext_t* to, const void* to_stack, size_t to_size) {
#if defined(__SANITIZE_ADDRESS__)
  void* fake = nullptr;
  __sanitizer_start_switch_fiber(&fake, to_stack, to_size);
  swapcontext(from, to);
  __sanitizer_finish_switch_fiber(fake, nullptr, nullptr);
#else
  swapcontext(from, to);
#endif
}
thread_local cudaError_t t_last_error = cudaSuccess;
thread_local std::string t_last_message;

const char* code_name(cudaError_t e) {
  switch (e) {
    case cudaSuccess: return "no error";
    case cudaErrorInvalidValue: return "invalid argument";
    case cudaErrorInvalidConfiguration: return "invalid configuration argument";
    case cudaErrorIllegalAddress: return "an illegal memory access was encountered";
    case cudaErrorLaunchFailure: return "unspecified launch failure";
  }
  return "unknown error";
}

// "file:line (function)" of a code address in this process, by addr2line (only when reporting an error).
std::string where_uncached(const void* pc) {
  Dl_info info;
  if (!pc || !dladdr(pc, &info) || !info.dli_fname) return "?";
  char cmd[1024];
  std::snprintf(cmd, sizeof cmd, "addr2line -C -f -i -e '%s' 0x%lx 2>/dev/null", info.dli_fname,
                static_cast<unsigned long>(reinterpret_cast<uintptr_t>(pc) - reinterpret_cast<uintptr_t>(info.dli_fbase) - 1));
  std::string out;
  if (FILE* f = popen(cmd, "r")) {
    char line[1024];
    std::vector<std::string> lines;
    while (std::fgets(line, sizeof line, f)) {
      std::string s(line);
      while (!s.empty() && (s.back() == '\n' || s.back() == '\r')) s.pop_back();
      lines.push_back(s);
    }
    pclose(f);
    // pairs of (function, file:line), innermost first
    for (size_t i = 0; i + 1 < lines.size(); i += 2) {
      std::string loc = lines[i + 1];
      // Copies of one source line the compiler made (tail duplication, peeled loops) differ only here.
      if (const size_t disc = loc.find(" (discriminator"); disc != std::string::npos) loc.resize(disc);
      const size_t slash = loc.rfind('/');
      if (slash != std::string::npos) loc = loc.substr(slash + 1);
      if (!out.empty()) out += " <- ";
      out += loc;
    }
  }
  return out.empty() ? (info.dli_sname ? info.dli_sname : "?") : out;
}

// file:line of pc, with the chain of inlined calls it sits in ("a.h:3 <- k.cu:7"); memoised.
std::string where(const void* pc) {
  static std::mutex mutex;
  static std::unordered_map<const void*, std::string> memo;
  std::lock_guard<std::mutex> lock(mutex);
  auto it = memo.find(pc);
  if (it == memo.end()) it = memo.emplace(pc, where_uncached(pc)).first;
  return it->second;
}

std::string thread_name(const Launch& L) {
  char buf[160];
  const Thread* t = L.cur;
  std::snprintf(buf, sizeof buf, "block (%u,%u,%u) thread (%u,%u,%u)", L.block.x, L.block.y, L.block.z,
                t ? t->idx.x : 0, t ? t->idx.y : 0, t ? t->idx.z : 0);
  return buf;
}

void to_scheduler(Launch& L) { switch_context(&L.cur->ctx, &L.sched, L.sched_stack, L.sched_stack_size); }

// Records the launch's first error and returns to the scheduler, which abandons the launch.
[[noreturn]] void fail_in_thread(cudaError_t code, const std::string& what, const void* pc);

void fail(Launch& L, cudaError_t code, const std::string& what) {
  if (L.failed) return;
  L.failed = true;
  L.code = code;
  L.error = what;
}

void fail_in_thread(cudaError_t code, const std::string& what, const void* pc) {
  Launch& L = *t_launch;
  fail(L, code, thread_name(L) + ": " + what + (pc ? " at " + where(pc) : std::string()));
  to_scheduler(L);
  std::abort();  // never resumed
}

void yield_current() { to_scheduler(*t_launch); }

void thread_main() {
  Launch& L = *t_launch;
#if defined(__SANITIZE_ADDRESS__)
  __sanitizer_finish_switch_fiber(nullptr, &L.sched_stack, &L.sched_stack_size);
#endif
  L.entry(L.ctx);
  L.cur->state = State::Done;
  to_scheduler(L);
}

// The order in which a pass resumes the block's runnable threads (or the grid's blocks).
void order_of(std::vector<int>& order, int n, Launch& L) {
  order.resize(n);
  for (int i = 0; i < n; ++i) order[i] = i;
  if (g_config.order == Order::Reverse) std::reverse(order.begin(), order.end());
  if (g_config.order == Order::Random)
    for (int i = n - 1; i > 0; --i) std::swap(order[i], order[splitmix(L.rng) % (i + 1)]);
}

void poison_shared(Launch& L) {
  // Order-dependent contents: a kernel that reads shared memory before writing it gets results that
  // differ between orders.
  const uint8_t pattern = g_config.order == Order::Forward ? 0xff : g_config.order == Order::Reverse ? 0x7f : 0xa5;
  std::memset(L.shared, pattern, kStaticBytes);
  std::memset(L.shared + kDynamicAt, pattern, L.cfg->shared_bytes);
}

// Resolves the shuffles whose warps have all arrived; returns whether any was.
bool resolve_shuffles(Launch& L) {
  bool any = false;
  const int warps = (L.threads + 31) / 32;
  for (int w = 0; w < warps; ++w) {
    const int lo = 32 * w, hi = std::min(L.threads, lo + 32);
    int waiting = -1;
    for (int i = lo; i < hi; ++i)
      if (L.t[i].state == State::Shuffle) { waiting = i; break; }
    if (waiting < 0) continue;
    const Thread& first = L.t[waiting];
    const unsigned mask = first.mask;
    bool complete = true;
    for (int lane = 0; lane < 32; ++lane) {
      if (!(mask >> lane & 1u)) continue;
      const int i = lo + lane;
      if (i >= hi) {
        fail(L, cudaErrorLaunchFailure, "warp " + std::to_string(w) +
                                            ": __shfl_down_sync mask names lane " + std::to_string(lane) +
                                            " of a warp of " + std::to_string(hi - lo) + " threads");
        return false;
      }
      const Thread& t = L.t[i];
      if (t.state == State::Done) {
        fail(L, cudaErrorLaunchFailure, "warp " + std::to_string(w) + ": __shfl_down_sync mask names lane " +
                                            std::to_string(lane) + ", which has exited");
        return false;
      }
      if (t.state != State::Shuffle) { complete = false; continue; }
      if (t.mask != mask || t.site != first.site) {
        fail(L, cudaErrorLaunchFailure, "warp " + std::to_string(w) + ": lanes in different __shfl_down_sync calls or masks");
        return false;
      }
    }
    if (!complete) continue;
    for (int lane = 0; lane < 32; ++lane) {
      if (!(mask >> lane & 1u)) continue;
      Thread& t = L.t[lo + lane];
      const unsigned seg = lane & ~unsigned(t.width - 1);
      const unsigned src = lane + t.delta;
      const bool inside = src < seg + unsigned(t.width) && (mask >> src & 1u);
      if (src < seg + unsigned(t.width) && !(mask >> src & 1u)) {
        fail(L, cudaErrorLaunchFailure, "warp " + std::to_string(w) + ": lane " + std::to_string(lane) +
                                            " reads lane " + std::to_string(src) + ", which is not in the mask");
        return false;
      }
      t.result = inside ? L.t[lo + src].bits : t.bits;
    }
    for (int lane = 0; lane < 32; ++lane)
      if (mask >> lane & 1u) L.t[lo + lane].state = State::Ready;
    any = true;
  }
  return any;
}

void run_block(Launch& L) {
  L.static_used = 0;
  L.static_sites.clear();
  poison_shared(L);
  for (int i = 0; i < L.threads; ++i) {
    Thread& t = L.t[i];
    const dim3 b = L.cfg->block;
    t.idx = {unsigned(i % b.x), unsigned(i / b.x % b.y), unsigned(i / (b.x * b.y))};
    t.linear = i;
    t.state = State::Ready;
    getcontext(&t.ctx);
    t.ctx.uc_stack.ss_sp = L.stacks[i];
    t.ctx.uc_stack.ss_size = kStackBytes;
    t.ctx.uc_link = nullptr;
    makecontext(&t.ctx, thread_main, 0);
  }
  std::vector<int> order;
  for (;;) {
    bool ran = true;
    while (ran) {
      ran = false;
      order_of(order, L.threads, L);
      for (int i : order) {
        Thread& t = L.t[i];
        if (t.state != State::Ready) continue;
        L.cur = &t;
        switch_context(&L.sched, &t.ctx, L.stacks[i], kStackBytes);
        L.cur = nullptr;
        if (L.failed) return;
        ran = true;
      }
      if (!ran && resolve_shuffles(L)) ran = true;
      if (L.failed) return;
    }
    int done = 0, barrier = 0, shuffle = 0;
    const void* site = nullptr;
    bool same = true;
    for (const Thread& t : L.t) {
      if (t.state == State::Done) ++done;
      if (t.state == State::Shuffle) ++shuffle;
      if (t.state == State::Barrier) {
        if (barrier++ == 0) site = t.site;
        // One __syncthreads can have several addresses (the compiler's copies of it): compare sources.
        else if (t.site != site && where(t.site) != where(site)) same = false;
      }
    }
    if (done == L.threads) return;
    const std::string blk = "block (" + std::to_string(L.block.x) + "," + std::to_string(L.block.y) + "," +
                            std::to_string(L.block.z) + ")";
    if (shuffle > 0) {
      fail(L, cudaErrorLaunchFailure, blk + ": " + std::to_string(shuffle) +
                                          " threads wait in __shfl_down_sync for lanes that are at a barrier or exited");
      return;
    }
    if (done > 0) {
      fail(L, cudaErrorLaunchFailure, blk + ": " + std::to_string(barrier) + " threads wait at __syncthreads (" +
                                          where(site) + ") after " + std::to_string(done) +
                                          " threads of the block exited (a barrier in divergent code)");
      return;
    }
    if (!same) {
      fail(L, cudaErrorLaunchFailure, blk + ": threads wait at different __syncthreads calls (" + where(site) +
                                          " and others): a barrier in divergent code");
      return;
    }
    for (Thread& t : L.t) t.state = State::Ready;
    ++g_stats.barriers;
  }
}

// ---- access checks ----------------------------------------------------------------------------------
void check_shared(Launch& L, uintptr_t a, size_t n, bool write, const void* pc) {
  const size_t off = a - reinterpret_cast<uintptr_t>(L.shared);
  const char* kind = write ? "store" : "load";
  char buf[256];
  if (off < kStaticBytes) {
    if (off + n <= L.static_used) return;
    std::snprintf(buf, sizeof buf, "shared %s of %zu bytes at byte %zu of the %zu bytes of static __shared__ arrays",
                  kind, n, off, L.static_used);
  } else if (off >= kDynamicAt && off + n <= kDynamicAt + L.cfg->shared_bytes) {
    return;
  } else if (off >= kDynamicAt) {
    std::snprintf(buf, sizeof buf,
                  "shared %s of %zu bytes at byte %zu of the dynamic shared memory, but the launch gave %zu bytes",
                  kind, n, off - kDynamicAt, L.cfg->shared_bytes);
  } else {
    std::snprintf(buf, sizeof buf, "shared %s of %zu bytes %zu bytes past the static __shared__ arrays", kind, n,
                  off - L.static_used);
  }
  fail_in_thread(cudaErrorIllegalAddress, buf, pc);
}

void check_global(Launch* L, uintptr_t a, size_t n, bool write, const void* pc) {
  if (L)
    for (const auto& [b, e] : L->recent)
      if (a >= b && a + n <= e) return;
  Heap& h = heap();
  uintptr_t begin = 0;
  size_t size = 0;
  bool found = false;
  {
    std::lock_guard<std::mutex> lock(h.mutex);
    auto it = h.live.upper_bound(a);
    if (it != h.live.begin()) {
      --it;
      begin = it->first;
      size = it->second;
      found = true;
    }
  }
  if (found && a >= begin && a + n <= begin + size) {
    if (L) {
      L->recent[L->recent_next] = {begin, begin + size};
      L->recent_next = (L->recent_next + 1) % int(L->recent.size());
    }
    return;
  }
  char buf[256];
  const char* kind = write ? "store" : "load";
  if (found && a < begin + size + kGap)
    std::snprintf(buf, sizeof buf, "global %s of %zu bytes at byte %zu of a %zu-byte buffer", kind, n,
                  size_t(a - begin), size);
  else
    std::snprintf(buf, sizeof buf, "global %s of %zu bytes at %p, in no live device buffer", kind, n,
                  reinterpret_cast<void*>(a));
  if (L) fail_in_thread(cudaErrorIllegalAddress, buf, pc);
  // Host code (a launcher) touching device memory: reported by the next cudaGetLastError.
  if (t_last_error == cudaSuccess) {
    t_last_error = cudaErrorIllegalAddress;
    t_last_message = std::string("host code ") + buf + " at " + where(pc);
  }
}

inline void on_access(uintptr_t a, size_t n, bool write, const void* pc, bool may_preempt = true) {
  Launch* L = t_launch;
  if (L && L->cur && a - reinterpret_cast<uintptr_t>(L->shared) < kSharedWindow) {
    check_shared(*L, a, n, write, pc);
    if (may_preempt && g_config.preempt > 0 &&
        static_cast<double>(splitmix(L->rng) >> 11) * 0x1.0p-53 < g_config.preempt) {
      ++g_stats.preemptions;
      yield_current();  // before a store: others run between this thread's load of a value and its update
    }
    return;
  }
  if (in_heap(a)) {
    check_global(L && L->cur ? L : nullptr, a, n, write, pc);
  } else if (L && L->cur && a < kNullPage) {  // a null pointer plus an offset: a GPU faults there too
    char buf[128];
    std::snprintf(buf, sizeof buf, "%s of %zu bytes at %p: a null pointer", write ? "store" : "load", n,
                  reinterpret_cast<void*>(a));
    fail_in_thread(cudaErrorIllegalAddress, buf, pc);
  }
}

}  // namespace

// ---- public API -------------------------------------------------------------------------------------
void configure(const Config& c) { g_config = c; }
Config configuration() { return g_config; }
Stats stats() { return g_stats; }

void* heap_alloc(size_t bytes) {
  Heap& h = heap();
  std::lock_guard<std::mutex> lock(h.mutex);
  if (h.base == 0) {
    void* p = mmap(nullptr, kWindowBytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (p == MAP_FAILED) return nullptr;
    h.base = h.next = reinterpret_cast<uintptr_t>(p);
    g_heap_lo = h.base;
    g_heap_hi = h.base + kWindowBytes;
  }
  const size_t slot = (std::max<size_t>(bytes, 1) + kPage - 1) / kPage * kPage + kGap;
  uintptr_t at;
  auto& slots = h.free_slots[slot];
  if (!slots.empty()) {
    at = slots.back();
    slots.pop_back();
  } else {
    if (h.next + slot > h.base + kWindowBytes) return nullptr;
    at = h.next;
    h.next += slot;
  }
  h.live[at] = bytes;
  h.slot_of[at] = slot;
  return reinterpret_cast<void*>(at);
}

void heap_free(void* p) {
  if (!p) return;
  Heap& h = heap();
  const uintptr_t at = reinterpret_cast<uintptr_t>(p);
  std::lock_guard<std::mutex> lock(h.mutex);
  h.live.erase(at);
  const size_t slot = h.slot_of[at];
  h.slot_of.erase(at);
  if (slot > kGap + 16 * kPage) madvise(p, slot - kGap, MADV_DONTNEED);  // large: give the pages back
  h.free_slots[slot].push_back(at);
}

uint3 thread_idx() { return t_launch->cur->idx; }
uint3 block_idx() { return t_launch->block; }
dim3 block_dim() { return t_launch->cfg->block; }
dim3 grid_dim() { return t_launch->cfg->grid; }

__attribute__((noinline)) void sync_threads() {
  Launch& L = *t_launch;
  L.cur->state = State::Barrier;
  L.cur->site = __builtin_return_address(0);
  yield_current();
}

__attribute__((noinline)) uint64_t shfl_down_bits(unsigned mask, uint64_t bits, unsigned delta, int width) {
  Launch& L = *t_launch;
  Thread& t = *L.cur;
  const unsigned lane = t.linear & 31;
  if (!(mask >> lane & 1u))
    fail_in_thread(cudaErrorLaunchFailure, "__shfl_down_sync called by a lane outside its mask",
                   __builtin_return_address(0));
  if (width < 1 || width > 32 || (width & (width - 1)))
    fail_in_thread(cudaErrorLaunchFailure, "__shfl_down_sync width must be a power of two up to 32",
                   __builtin_return_address(0));
  t.state = State::Shuffle;
  t.site = __builtin_return_address(0);
  t.mask = mask;
  t.delta = delta;
  t.width = width;
  t.bits = bits;
  yield_current();
  return t.result;
}

unsigned char* dynamic_shared() { return t_launch->shared + kDynamicAt; }

__attribute__((noinline)) void* static_shared(size_t bytes, size_t align) {
  Launch& L = *t_launch;
  const void* site = __builtin_return_address(0);
  for (const auto& [s, off] : L.static_sites)
    if (s == site) return L.shared + off;
  const size_t off = (L.static_used + align - 1) / align * align;
  if (off + bytes > kStaticBytes || off + bytes + L.cfg->shared_bytes > L.smem_limit)
    fail_in_thread(cudaErrorLaunchFailure,
                   "static __shared__ arrays of " + std::to_string(off + bytes) + " bytes plus " +
                       std::to_string(L.cfg->shared_bytes) + " dynamic bytes exceed the limit of " +
                       std::to_string(L.smem_limit),
                   site);
  L.static_sites.emplace_back(site, off);
  L.static_used = off + bytes;
  return L.shared + off;
}

template <class U>
static U atomic_add_impl(U* p, U v, const void* pc) {
  on_access(reinterpret_cast<uintptr_t>(p), sizeof(U), true, pc, /*may_preempt=*/false);
  const U old = *p;
  *p = old + v;
  ++g_stats.atomics;
  return old;
}
__attribute__((noinline)) unsigned atomic_add(unsigned* p, unsigned v) { return atomic_add_impl(p, v, __builtin_return_address(0)); }
__attribute__((noinline)) int atomic_add(int* p, int v) { return atomic_add_impl(p, v, __builtin_return_address(0)); }
__attribute__((noinline)) unsigned long long atomic_add(unsigned long long* p, unsigned long long v) {
  return atomic_add_impl(p, v, __builtin_return_address(0));
}
__attribute__((noinline)) float atomic_add(float* p, float v) { return atomic_add_impl(p, v, __builtin_return_address(0)); }
__attribute__((noinline)) double atomic_add(double* p, double v) { return atomic_add_impl(p, v, __builtin_return_address(0)); }

cudaError_t set_func_attribute(const void* func, cudaFuncAttribute attr, int value) {
  if (attr != cudaFuncAttributeMaxDynamicSharedMemorySize || value < 0 || value > kSmemOptin) return cudaErrorInvalidValue;
  std::lock_guard<std::mutex> lock(g_attr_mutex);
  g_smem_limit[func] = value;
  return cudaSuccess;
}

void launch(const LaunchConfig& cfg, const void* kernel, const char* name, void (*entry)(void*), void* ctx) {
  std::lock_guard<std::mutex> guard(g_launch_mutex);
  Launch L;
  L.cfg = &cfg;
  L.name = name;
  L.entry = entry;
  L.ctx = ctx;
  const uint64_t threads = uint64_t(cfg.block.x) * cfg.block.y * cfg.block.z;
  const uint64_t blocks = uint64_t(cfg.grid.x) * cfg.grid.y * cfg.grid.z;
  size_t limit = kSmemDefault;
  {
    std::lock_guard<std::mutex> lock(g_attr_mutex);
    if (auto it = g_smem_limit.find(kernel); it != g_smem_limit.end()) limit = std::max<size_t>(limit, it->second);
  }
  L.smem_limit = limit;
  auto reject = [&](cudaError_t code, const std::string& why) {
    if (t_last_error == cudaSuccess) {
      t_last_error = code;
      t_last_message = std::string("kernel ") + name + ": " + why;
    }
  };
  if (threads == 0 || threads > kMaxThreads || blocks == 0 || cfg.grid.x > 0x7fffffffu || cfg.grid.y > 65535 ||
      cfg.grid.z > 65535)
    return reject(cudaErrorInvalidConfiguration, "grid (" + std::to_string(cfg.grid.x) + "," +
                                                     std::to_string(cfg.grid.y) + "," + std::to_string(cfg.grid.z) +
                                                     ") x block (" + std::to_string(cfg.block.x) + "," +
                                                     std::to_string(cfg.block.y) + "," + std::to_string(cfg.block.z) + ")");
  if (cfg.shared_bytes > limit)
    return reject(cudaErrorInvalidValue, std::to_string(cfg.shared_bytes) + " bytes of dynamic shared memory, limit " +
                                             std::to_string(limit) + " (cudaFuncSetAttribute raises it)");
  L.threads = static_cast<int>(threads);
  L.t.resize(L.threads);
  static thread_local std::vector<char*> stacks;
  static thread_local unsigned char* shared = nullptr;
  while (stacks.size() < threads) {
    void* s = mmap(nullptr, kStackBytes + kPage, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    mprotect(s, kPage, PROT_NONE);  // stack overflow faults instead of corrupting
    stacks.push_back(static_cast<char*>(s) + kPage);
  }
  if (!shared)
    shared = static_cast<unsigned char*>(
        mmap(nullptr, kSharedWindow, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0));
  L.stacks = stacks;
  L.shared = shared;
  L.rng = g_config.seed ^ (0x632be59bd9b4e019ull * ++g_stats.launches);
  Launch* const outer = t_launch;
  t_launch = &L;
  std::vector<int> order;
  order_of(order, static_cast<int>(blocks), L);
  for (int b : order) {
    L.block = {unsigned(b % cfg.grid.x), unsigned(b / cfg.grid.x % cfg.grid.y), unsigned(b / (uint64_t(cfg.grid.x) * cfg.grid.y))};
    L.recent = {};
    run_block(L);
    ++g_stats.blocks;
    if (L.failed) break;
  }
  t_launch = outer;
  if (L.failed) reject(L.code, L.error);
}

}  // namespace mixdiff::emu

cudaError_t cudaGetDevice(int* device) {
  *device = 0;
  return cudaSuccess;
}
cudaError_t cudaDeviceGetAttribute(int* value, cudaDeviceAttr attr, int) {
  switch (attr) {
    case cudaDevAttrMultiProcessorCount: *value = mixdiff::emu::kSms; return cudaSuccess;
    case cudaDevAttrMaxSharedMemoryPerBlockOptin: *value = mixdiff::emu::kSmemOptin; return cudaSuccess;
  }
  return cudaErrorInvalidValue;
}
cudaError_t cudaGetLastError() {
  const cudaError_t e = mixdiff::emu::t_last_error;
  mixdiff::emu::t_last_error = cudaSuccess;
  if (e == cudaSuccess) mixdiff::emu::t_last_message.clear();
  return e;
}
const char* cudaGetErrorString(cudaError_t error) {
  static thread_local std::string msg;
  msg = mixdiff::emu::code_name(error);
  if (error != cudaSuccess && !mixdiff::emu::t_last_message.empty()) msg += ": " + mixdiff::emu::t_last_message;
  return msg.c_str();
}

#if !defined(MIXDIFF_EMU_SANITIZERS)
// ---- the access hooks: ThreadSanitizer's instrumentation calls (GCC -fsanitize=thread, compile only,
// --param=tsan-instrument-func-entry-exit=0), used for their call sites, not for race detection: each
// load and store of a kernel translation unit calls one before it accesses memory, and a read-modify-
// write stays a separate load and store (so a preemption before the store can lose an update).
extern "C" {
void __tsan_init() {}
#define MIXDIFF_EMU_HOOKS(n)                                                                                    \
  void __tsan_read##n(void* a) { mixdiff::emu::on_access(uintptr_t(a), n, false, __builtin_return_address(0)); } \
  void __tsan_write##n(void* a) { mixdiff::emu::on_access(uintptr_t(a), n, true, __builtin_return_address(0)); } \
  void __tsan_unaligned_read##n(void* a) {                                                                      \
    mixdiff::emu::on_access(uintptr_t(a), n, false, __builtin_return_address(0));                               \
  }                                                                                                             \
  void __tsan_unaligned_write##n(void* a) {                                                                     \
    mixdiff::emu::on_access(uintptr_t(a), n, true, __builtin_return_address(0));                                \
  }
MIXDIFF_EMU_HOOKS(1)
MIXDIFF_EMU_HOOKS(2)
MIXDIFF_EMU_HOOKS(4)
MIXDIFF_EMU_HOOKS(8)
MIXDIFF_EMU_HOOKS(16)
#undef MIXDIFF_EMU_HOOKS
void __tsan_read_range(void* a, size_t n) { mixdiff::emu::on_access(uintptr_t(a), n, false, __builtin_return_address(0)); }
void __tsan_write_range(void* a, size_t n) { mixdiff::emu::on_access(uintptr_t(a), n, true, __builtin_return_address(0)); }
void __tsan_vptr_update(void**, void*) {}
void __tsan_vptr_read(void**) {}
}
#endif
