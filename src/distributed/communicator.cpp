#include "chainrule/distributed/communicator.h"

#include <fmt/format.h>

#include <chrono>
#include <cstdlib>
#include <cstring>
#include <thread>

#include "chainrule/errors.h"

#if CHAINRULE_WITH_MPI
// The C API only: Open MPI's and MPICH's old C++ bindings do not compile cleanly with -Werror.
#define OMPI_SKIP_MPICXX 1
#define MPICH_SKIP_MPICXX 1
#include <mpi.h>
#endif

namespace chainrule::distributed {

#if CHAINRULE_WITH_MPI
bool available() { return true; }
#else
bool available() { return false; }
#endif

namespace detail {
struct Request {
#if CHAINRULE_WITH_MPI
  MPI_Request request = MPI_REQUEST_NULL;
#endif
  const Communicator* comm = nullptr;
  const char* what = "";
  Tensor keep_alive;  // the buffer MPI reads and writes until the request finishes
  bool done = false;
};
}  // namespace detail

namespace {

Communicator* g_world = nullptr;

void check_buffer(const char* op, const Tensor& t) {
  if (!t.defined() || t.level() != 0) throw ValueError(fmt::format("{}: needs a concrete tensor", op));
  if (t.dtype() != DType::f32 && t.dtype() != DType::f64 && t.dtype() != DType::i64)
    throw DTypeError(fmt::format("{}: only float32, float64 and int64 tensors, not {}", op, dtype_name(t.dtype())));
  if (t.numel() > (std::int64_t{1} << 31) - 1)
    throw ValueError(fmt::format("{}: {} elements is more than one MPI call moves; split the tensor", op, t.numel()));
}

#if CHAINRULE_WITH_MPI
// The tensor's bytes for MPI to write into (storage is always contiguous); bumps its version.
void* writable_bytes(Tensor& t) {
  ++t.impl()->storage->version;
  return static_cast<char*>(t.impl()->storage->data) + t.impl()->offset * static_cast<std::int64_t>(itemsize(t.dtype()));
}

MPI_Datatype mpi_type(DType d) { return d == DType::f32 ? MPI_FLOAT : d == DType::f64 ? MPI_DOUBLE : MPI_INT64_T; }

void check_mpi(int rc, const char* op) {
  if (rc == MPI_SUCCESS) return;
  char text[MPI_MAX_ERROR_STRING];
  int len = 0;
  MPI_Error_string(rc, text, &len);
  throw DistributedError(fmt::format("{}: MPI error: {}", op, std::string(text, static_cast<std::size_t>(len))));
}

void finalize_at_exit() {
  int initialized = 0, finalized = 0;
  MPI_Initialized(&initialized);
  MPI_Finalized(&finalized);
  if (initialized && !finalized) MPI_Finalize();
}
#endif

}  // namespace

Communicator::Communicator(bool mpi) : mpi_(mpi) {
#if CHAINRULE_WITH_MPI
  if (!mpi_) return;
  int initialized = 0;
  MPI_Initialized(&initialized);
  if (!initialized) {
    int provided = 0;
    // Only the calling thread uses MPI (the backward pass's hooks run on it too).
    check_mpi(MPI_Init_thread(nullptr, nullptr, MPI_THREAD_FUNNELED, &provided), "MPI_Init_thread");
    std::atexit(finalize_at_exit);
  }
  // Errors come back as codes, so they become DistributedError with a message.
  MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
  MPI_Comm_rank(MPI_COMM_WORLD, &rank_);
  MPI_Comm_size(MPI_COMM_WORLD, &size_);
#endif
}

Communicator& Communicator::world() {
#if CHAINRULE_WITH_MPI
  static Communicator c(true);
#else
  static Communicator c(false);
#endif
  g_world = &c;
  return c;
}

Communicator& Communicator::single() {
  static Communicator c(false);
  return c;
}

void Communicator::set_timeout(double seconds) { timeout_seconds_ = seconds; }

bool Work::test() {
  if (!request_ || request_->done) return true;
#if CHAINRULE_WITH_MPI
  int flag = 0;
  check_mpi(MPI_Test(&request_->request, &flag, MPI_STATUS_IGNORE), request_->what);
  if (flag) {
    request_->done = true;
    request_->keep_alive = Tensor();
  }
#else
  request_->done = true;
#endif
  return request_->done;
}

void Work::wait() {
  if (!request_) return;
  using clock = std::chrono::steady_clock;
  const auto start = clock::now();
  const double limit = request_->comm->timeout();
  // Poll rather than block in MPI_Wait: a dead peer then ends this rank after the timeout, and
  // sleeping between polls leaves the cores to the other ranks when they outnumber them.
  for (int polls = 0; !test(); ++polls) {
    if (polls > 200) std::this_thread::sleep_for(std::chrono::microseconds(polls > 2000 ? 200 : 20));
    if (limit > 0 && (polls & 15) == 0) {
      const double waited = std::chrono::duration<double>(clock::now() - start).count();
      if (waited > limit)
        throw DistributedError(fmt::format("rank {} of {}: {} did not complete within {:.0f} s; another rank has died or stopped "
                                           "responding",
                                           request_->comm->rank(), request_->comm->size(), request_->what, limit));
    }
  }
}

Work Communicator::iallreduce_sum(Tensor& t) {
  check_buffer("allreduce_sum", t);
  Work w;
  w.request_ = std::make_shared<detail::Request>();
  w.request_->comm = this;
  w.request_->what = "allreduce_sum";
  if (!mpi_ || size_ == 1) {
    w.request_->done = true;
    return w;
  }
#if CHAINRULE_WITH_MPI
  w.request_->keep_alive = t;
  check_mpi(MPI_Iallreduce(MPI_IN_PLACE, writable_bytes(t), static_cast<int>(t.numel()), mpi_type(t.dtype()), MPI_SUM,
                           MPI_COMM_WORLD, &w.request_->request),
            "allreduce_sum");
#endif
  return w;
}

void Communicator::allreduce_sum(Tensor& t) { iallreduce_sum(t).wait(); }

void Communicator::broadcast(Tensor& t, int root) {
  check_buffer("broadcast", t);
  if (root < 0 || root >= size_) throw ValueError(fmt::format("broadcast: root {} is not a rank of {}", root, size_));
  if (!mpi_ || size_ == 1) return;
#if CHAINRULE_WITH_MPI
  Work w;
  w.request_ = std::make_shared<detail::Request>();
  w.request_->comm = this;
  w.request_->what = "broadcast";
  w.request_->keep_alive = t;
  check_mpi(MPI_Ibcast(writable_bytes(t), static_cast<int>(t.numel()), mpi_type(t.dtype()), root, MPI_COMM_WORLD,
                       &w.request_->request),
            "broadcast");
  w.wait();
#endif
}

void Communicator::broadcast(std::string& s, int root) {
  if (!mpi_ || size_ == 1) return;
  Tensor length = from_vector(std::vector<std::int64_t>{static_cast<std::int64_t>(s.size())});
  broadcast(length, root);
  const auto n = static_cast<std::size_t>(length.data<std::int64_t>()[0]);
  // Packed into int64 words: the collectives move tensors.
  Tensor words = zeros({static_cast<std::int64_t>((n + 7) / 8)}, DType::i64);
  if (rank_ == root && n > 0) std::memcpy(words.mutable_data<std::int64_t>(), s.data(), n);
  broadcast(words, root);
  s.assign(reinterpret_cast<const char*>(words.data<std::int64_t>()), n);
}

void Communicator::barrier() {
  if (!mpi_ || size_ == 1) return;
#if CHAINRULE_WITH_MPI
  Work w;
  w.request_ = std::make_shared<detail::Request>();
  w.request_->comm = this;
  w.request_->what = "barrier";
  check_mpi(MPI_Ibarrier(MPI_COMM_WORLD, &w.request_->request), "barrier");
  w.wait();
#endif
}

void Communicator::abort(int code) {
#if CHAINRULE_WITH_MPI
  if (mpi_) MPI_Abort(MPI_COMM_WORLD, code);
#endif
  std::exit(code);
}

void abort_job_if_distributed(int code) {
  if (g_world && g_world->is_mpi() && g_world->size() > 1) g_world->abort(code);
}

Communicator& Communicator::world_if_started() { return g_world ? *g_world : single(); }

}  // namespace chainrule::distributed
