// A caching CPU allocator for large tensors, installed in place of libtorch's default (c10::SetCPUAllocator).
//
// Training allocates the same tensor sizes in much the same order every step: activations that live from a forward
// pass to its backward pass, and their gradients. Served from glibc's heap (kept from returning memory, else every
// allocation faults fresh pages), those blocks fragment it: at config-f 256x256 the peak resident size was 1.6-1.8x
// the most tensor memory ever alive at once, and varied from run to run by a gigabyte.
//
// Here every large block is its own mapping. A freed block is kept and handed out again for the next tensor of the
// same size. The blocks kept are bounded by a budget: alive + kept <= max(peak alive * (1 + slack), peak alive +
// floor), where peak alive is the most ever alive. When a tensor has no block of its size and a new mapping would
// break the budget, the kept block closest in size is resized to it (its tail unmapped, or the mapping grown in
// place or moved by the kernel without copying), and more kept blocks are unmapped, smallest first, until the
// budget holds. So the resident size tracks the tensors alive, and after the first step nearly every allocation
// reuses pages that are already resident (a fresh page costs a fault and zeroing: ~0.4 s per GB here). Tensors
// below the threshold keep libtorch's allocator.
#include <c10/core/Allocator.h>
#include <c10/core/CPUAllocator.h>
#include <c10/core/impl/alloc_cpu.h>
#include <sys/mman.h>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstring>
#include <map>
#include <mutex>
#include <unordered_map>

#ifndef MADV_POPULATE_WRITE
#define MADV_POPULATE_WRITE 23
#endif

namespace {

constexpr size_t kPage = 4096;

size_t round_to_page(size_t n) { return (n + kPage - 1) & ~(kPage - 1); }

struct Stats {
  uint64_t live = 0;         // bytes of large tensors alive
  uint64_t peak_live = 0;    // the most `live` has been since the last reset
  uint64_t cached = 0;       // bytes of freed large blocks kept for reuse
  uint64_t peak_mapped = 0;  // the most live + cached has been since the last reset
  uint64_t maps = 0;         // allocations given a new mapping
  uint64_t reuses = 0;       // allocations given a kept block of their size
  uint64_t resizes = 0;      // allocations given a kept block of another size, resized
};

// A mapping of `size` bytes (a multiple of the page), faulted in at once: it is about to be written, and one call
// is cheaper than a fault per page. Null when the system refuses.
void* map_block(size_t size) {
  void* p = mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE, -1, 0);
  return p == MAP_FAILED ? nullptr : p;
}

// Block `p` of `from` bytes as a block of `to` bytes: its head, or the mapping grown (moved if need be, pages and
// all). Null when the system refuses (the block is then gone).
void* resize_block(void* p, size_t from, size_t to) {
  if (to < from) {
    munmap(static_cast<char*>(p) + to, from - to);
    return p;
  }
  void* q = mremap(p, from, to, MREMAP_MAYMOVE);
  if (q == MAP_FAILED) {
    munmap(p, from);
    return nullptr;
  }
  madvise(static_cast<char*>(q) + from, to - from, MADV_POPULATE_WRITE);  // a hint: older kernels fault on use
  return q;
}

class CachingCpuAllocator final : public c10::Allocator {
 public:
  void configure(size_t threshold, double slack, size_t floor) {
    std::lock_guard<std::mutex> lock(mu_);
    threshold_ = threshold;
    slack_ = slack;
    floor_ = floor;
  }

  c10::DataPtr allocate(size_t n) override {
    void* p = n >= threshold_.load(std::memory_order_relaxed) ? allocate_large(round_to_page(n)) : nullptr;
    if (p == nullptr) p = c10::alloc_cpu(n);  // small, or the system refused: libtorch's allocator reports OOM
    return {p, p, &deleter, c10::Device(c10::DeviceType::CPU)};
  }

  c10::DeleterFnPtr raw_deleter() const override { return &deleter; }

  void copy_data(void* dest, const void* src, std::size_t count) const override {
    default_copy_data(dest, src, count);
  }

  Stats stats() {
    std::lock_guard<std::mutex> lock(mu_);
    return stats_;
  }

  void reset_peaks() {
    std::lock_guard<std::mutex> lock(mu_);
    stats_.peak_live = stats_.live;
    stats_.peak_mapped = stats_.live + stats_.cached;
  }

  void release_cached() {
    std::lock_guard<std::mutex> lock(mu_);
    for (auto& [size, p] : free_) munmap(p, size);
    free_.clear();
    stats_.cached = 0;
  }

  static CachingCpuAllocator& instance() {
    static CachingCpuAllocator* a = new CachingCpuAllocator();  // never destroyed: tensors may outlive main
    return *a;
  }

 private:
  static void deleter(void* p) { instance().release(p); }

  void* allocate_large(size_t size) {
    std::lock_guard<std::mutex> lock(mu_);
    most_live_ = std::max(most_live_, stats_.live + size);
    size_t budget = std::max(static_cast<size_t>(most_live_ * (1.0 + slack_)), most_live_ + floor_);
    void* p = nullptr;
    auto exact = free_.find(size);
    if (exact != free_.end()) {
      p = exact->second;
      take(exact);
      stats_.reuses++;
    } else if (stats_.live + stats_.cached + size > budget && !free_.empty()) {
      auto it = free_.lower_bound(size);
      if (it == free_.end() || (it != free_.begin() && size - std::prev(it)->first < it->first - size)) --it;
      size_t from = it->first;
      p = it->second;
      take(it);
      while (stats_.live + stats_.cached + size > budget && !free_.empty()) {
        munmap(free_.begin()->second, free_.begin()->first);
        take(free_.begin());
      }
      p = resize_block(p, from, size);
      if (p != nullptr) stats_.resizes++;
    }
    if (p == nullptr) {
      p = map_block(size);
      if (p == nullptr) return nullptr;
      stats_.maps++;
    }
    live_[p] = size;
    stats_.live += size;
    stats_.peak_live = std::max(stats_.peak_live, stats_.live);
    stats_.peak_mapped = std::max(stats_.peak_mapped, stats_.live + stats_.cached);
    return p;
  }

  void take(std::multimap<size_t, void*>::iterator it) {
    stats_.cached -= it->first;
    free_.erase(it);
  }

  void release(void* p) {
    if (p == nullptr) return;
    // Large blocks are page-aligned mappings; anything else came from c10::alloc_cpu.
    if ((reinterpret_cast<uintptr_t>(p) & (kPage - 1)) == 0) {
      std::lock_guard<std::mutex> lock(mu_);
      auto it = live_.find(p);
      if (it != live_.end()) {
        size_t size = it->second;
        live_.erase(it);
        stats_.live -= size;
        stats_.cached += size;
        free_.emplace(size, p);
        return;
      }
    }
    c10::free_cpu(p);
  }

  std::mutex mu_;
  std::atomic<size_t> threshold_{SIZE_MAX};
  double slack_ = 0.0;
  size_t floor_ = 0;
  size_t most_live_ = 0;  // the most bytes ever alive at once (peaks reset for reports, not this)
  std::unordered_map<void*, size_t> live_;
  std::multimap<size_t, void*> free_;  // kept blocks by size
  Stats stats_;
};

}  // namespace

extern "C" {

// Installs the allocator (once; later calls change its settings): tensors of at least `threshold` bytes get their
// own mappings, kept within the budget described above.
void sg2_cpu_alloc_install(size_t threshold, double slack, size_t floor) {
  auto& a = CachingCpuAllocator::instance();
  a.configure(threshold, slack, floor);
  static std::once_flag once;
  std::call_once(once, [&] { c10::SetCPUAllocator(&a, /*priority=*/1); });
}

// live, peak_live, cached, peak_mapped, maps, reuses, resizes.
void sg2_cpu_alloc_stats(uint64_t* out) {
  Stats s = CachingCpuAllocator::instance().stats();
  uint64_t v[7] = {s.live, s.peak_live, s.cached, s.peak_mapped, s.maps, s.reuses, s.resizes};
  std::memcpy(out, v, sizeof(v));
}

void sg2_cpu_alloc_reset_peaks() { CachingCpuAllocator::instance().reset_peaks(); }

void sg2_cpu_alloc_release_cached() { CachingCpuAllocator::instance().release_cached(); }

}  // extern "C"
