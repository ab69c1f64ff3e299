// A thin bridge from Rust to libtorch's c10d: a TCPStore rendezvous and a Gloo process group, and the collectives
// training needs. Every entry point catches C++ exceptions and returns -1 with the message in `err`.
//
// The torch wheel ships c10d's headers but not Gloo's, and ProcessGroupGloo.hpp includes Gloo's. The class is
// therefore declared here with only the members this file calls (constructor and the Options factory: their
// mangled names depend on nothing else), and the object is built by placement new in a buffer larger than the real
// class, then used through its base class `c10d::Backend`, whose header is complete. Its virtual destructor frees it.
#include <torch/csrc/distributed/c10d/Backend.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>

#include <chrono>
#include <cstring>
#include <exception>
#include <new>
#include <string>
#include <utility>
#include <vector>

namespace c10d {
class ProcessGroupGloo : public Backend {
 public:
  struct Options : public Backend::Options {
    static c10::intrusive_ptr<Options> create_default(std::chrono::milliseconds timeout);
  };
  ProcessGroupGloo(const c10::intrusive_ptr<Store>& store, int rank, int size, c10::intrusive_ptr<Options> options);
};
}  // namespace c10d

#ifdef SG2_WITH_NCCL
// The same approach for NCCL (libtorch_cuda): ProcessGroupNCCL.hpp needs CUDA's and CCCL's headers, which the
// wheels do not all ship, so the constructors are declared here and the objects built in buffers larger than the
// real classes (the Options object too; only Backend::Options' `timeout` is set through its complete base).
namespace c10d {
class ProcessGroupNCCL : public Backend {
 public:
  struct Options : Backend::Options {
    explicit Options(bool is_high_priority_stream);
  };
  ProcessGroupNCCL(c10::intrusive_ptr<Store> store, int rank, int size, c10::intrusive_ptr<Options> options);
};
}  // namespace c10d
#endif

namespace {
void copy_message(const char* msg, char* err, size_t len) {
  if (err == nullptr || len == 0) return;
  std::strncpy(err, msg, len - 1);
  err[len - 1] = '\0';
}

// Generous: the real ProcessGroupGloo is a few hundred bytes, ProcessGroupNCCL a few kilobytes.
constexpr size_t kGlooObjectBytes = 1 << 16;
constexpr size_t kNcclObjectBytes = 1 << 20;

struct Group {
  c10::intrusive_ptr<c10d::Store> store;
  c10::intrusive_ptr<c10d::Backend> backend;
  std::chrono::milliseconds timeout;
};

// Builds a T (declared here with only its constructor) in a zeroed buffer of `bytes`, larger than the real class.
template <typename T, typename... Args>
T* place(size_t bytes, Args&&... args) {
  void* mem = ::operator new(bytes);
  std::memset(mem, 0, bytes);
  try {
    return new (mem) T(std::forward<Args>(args)...);
  } catch (...) {
    ::operator delete(mem);
    throw;
  }
}

std::vector<at::Tensor> tensors_of(void** ptrs, int n) {
  std::vector<at::Tensor> v;
  v.reserve(n);
  for (int i = 0; i < n; ++i) v.push_back(*static_cast<at::Tensor*>(ptrs[i]));
  return v;
}

void wait(const c10::intrusive_ptr<c10d::Work>& work, std::chrono::milliseconds timeout) {
  if (!work->wait(timeout)) throw std::runtime_error("collective timed out");
}
}  // namespace

extern "C" {

// Joins the group of `world` processes whose rank 0 listens on host:port (rank 0 starts the store), with Gloo
// (`backend` 0) or NCCL (1). Returns a handle, or nullptr with the message in `err`.
void* sg2_pg_new(const char* host, int port, int rank, int world, int timeout_ms, int backend, char* err,
                 size_t len) {
  try {
    auto timeout = std::chrono::milliseconds(timeout_ms);
    c10d::TCPStoreOptions so;
    so.port = static_cast<std::uint16_t>(port);
    so.isServer = rank == 0;
    so.numWorkers = world;
    so.waitWorkers = true;
    so.timeout = timeout;
    auto store = c10::make_intrusive<c10d::TCPStore>(std::string(host), so);
    c10d::Backend* pg = nullptr;
    if (backend == 0) {
      auto options = c10d::ProcessGroupGloo::Options::create_default(timeout);
      pg = place<c10d::ProcessGroupGloo>(kGlooObjectBytes, store, rank, world, options);
    } else {
#ifdef SG2_WITH_NCCL
      auto* o = place<c10d::ProcessGroupNCCL::Options>(kGlooObjectBytes, false);
      auto options = c10::intrusive_ptr<c10d::ProcessGroupNCCL::Options>::unsafe_steal_from_new(o);
      options->timeout = timeout;
      pg = place<c10d::ProcessGroupNCCL>(kNcclObjectBytes, store, rank, world, options);
#else
      throw std::runtime_error("this build of sg2 has no NCCL (libtorch without CUDA)");
#endif
    }
    auto handle = c10::intrusive_ptr<c10d::Backend>::unsafe_steal_from_new(pg);
    return new Group{store, handle, timeout};
  } catch (const std::exception& e) {
    copy_message(e.what(), err, len);
    return nullptr;
  }
}

// 1 when NCCL was compiled in.
int sg2_pg_has_nccl() {
#ifdef SG2_WITH_NCCL
  return 1;
#else
  return 0;
#endif
}

void sg2_pg_free(void* group) {
  delete static_cast<Group*>(group);
}

// Sums `n` tensors element-wise across ranks, in place (one collective per tensor list).
int sg2_pg_allreduce_sum(void* group, void** tensors, int n, char* err, size_t len) {
  try {
    auto* g = static_cast<Group*>(group);
    auto ts = tensors_of(tensors, n);
    c10d::AllreduceOptions opts;
    opts.reduceOp = c10d::ReduceOp::SUM;
    opts.timeout = g->timeout;
    wait(g->backend->allreduce(ts, opts), g->timeout);
    return 0;
  } catch (const std::exception& e) {
    copy_message(e.what(), err, len);
    return -1;
  }
}

// Overwrites `n` tensors with rank `root`'s, in place.
int sg2_pg_broadcast(void* group, void** tensors, int n, int root, char* err, size_t len) {
  try {
    auto* g = static_cast<Group*>(group);
    auto ts = tensors_of(tensors, n);
    c10d::BroadcastOptions opts;
    opts.rootRank = root;
    opts.timeout = g->timeout;
    wait(g->backend->broadcast(ts, opts), g->timeout);
    return 0;
  } catch (const std::exception& e) {
    copy_message(e.what(), err, len);
    return -1;
  }
}

// outputs[r] = rank r's `input`, for every rank r (outputs: `world` tensors shaped like input).
int sg2_pg_all_gather(void* group, void* input, void** outputs, int world, char* err, size_t len) {
  try {
    auto* g = static_cast<Group*>(group);
    std::vector<at::Tensor> in{*static_cast<at::Tensor*>(input)};
    std::vector<std::vector<at::Tensor>> out{tensors_of(outputs, world)};
    c10d::AllgatherOptions opts;
    opts.timeout = g->timeout;
    wait(g->backend->allgather(out, in, opts), g->timeout);
    return 0;
  } catch (const std::exception& e) {
    copy_message(e.what(), err, len);
    return -1;
  }
}

int sg2_pg_barrier(void* group, char* err, size_t len) {
  try {
    auto* g = static_cast<Group*>(group);
    c10d::BarrierOptions opts;
    opts.timeout = g->timeout;
    wait(g->backend->barrier(opts), g->timeout);
    return 0;
  } catch (const std::exception& e) {
    copy_message(e.what(), err, len);
    return -1;
  }
}

}  // extern "C"
