#pragma once
// The processes of a data-parallel job and the collectives between them, over MPI (Open MPI when
// built with CHAINRULE_MPI). Built without MPI, the same API is a one-process communicator:
// every collective is the identity and `available()` is false.
//
// Collectives work on concrete, contiguous float32, float64 or int64 tensors, in place. Waits poll
// with a timeout (set_timeout), so a rank that died or hangs ends the others with a
// DistributedError instead of a hang; the launcher (mpirun) usually ends them sooner.
#include <cstdint>
#include <memory>
#include <string>

#include "chainrule/tensor/tensor.h"

namespace chainrule::distributed {

// True when chainrule was built with MPI.
bool available();

namespace detail {
struct Request;
}

// A started non-blocking collective (from Communicator::iallreduce_sum), as torch's Work.
class Work {
 public:
  Work() = default;
  bool test();  // true once finished; also lets MPI make progress
  void wait();  // until finished; DistributedError after the communicator's timeout
  bool defined() const { return request_ != nullptr; }

 private:
  friend class Communicator;
  std::shared_ptr<detail::Request> request_;
};

class Communicator {
 public:
  // Every process of the job (MPI_COMM_WORLD). Starts MPI on first use and finishes it at exit.
  // Built without MPI: rank 0 of 1.
  static Communicator& world();
  // A communicator of this process alone, which never touches MPI (tests, single-process runs).
  static Communicator& single();
  // world() if it has been used, else single(): for messages that name the rank, without starting MPI.
  static Communicator& world_if_started();

  int rank() const { return rank_; }
  int size() const { return size_; }
  bool is_mpi() const { return mpi_; }

  void barrier();
  void broadcast(Tensor& t, int root = 0);            // t's bytes from `root` on every rank
  void broadcast(std::string& s, int root = 0);
  void allreduce_sum(Tensor& t);                      // t = Σ over ranks, on every rank
  Work iallreduce_sum(Tensor& t);                     // started; t must stay alive until waited

  double timeout() const { return timeout_seconds_; }
  void set_timeout(double seconds);  // for every wait (default 300 s; <= 0: none)

  // Ends the whole job (MPI_Abort) with `code`; in a one-process communicator, std::exit(code).
  [[noreturn]] void abort(int code);

 private:
  friend class Work;
  Communicator(bool mpi);
  bool mpi_ = false;
  int rank_ = 0, size_ = 1;
  double timeout_seconds_ = 300;
};

// When MPI is running with more than one process, ends the whole job with `code` (MPI_Abort), so
// that the other ranks do not wait for this one; otherwise returns. For error paths of programs.
void abort_job_if_distributed(int code);

}  // namespace chainrule::distributed
