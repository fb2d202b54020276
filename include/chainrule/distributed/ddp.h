#pragma once
// Data-parallel gradients, in the manner of torch.nn.parallel.DistributedDataParallel: every rank
// runs the same model on its own part of the batch; after backward() the gradients are the mean
// over the ranks.
//
// The parameters are grouped into buckets of at least `bucket_bytes` (bar the last), in reverse order (the order in
// which backward() produces their gradients). A post-accumulate-grad hook on each parameter copies
// its gradient into its bucket's flat buffer; as soon as a bucket is full, its allreduce starts,
// while the backward pass goes on with earlier layers. Buckets start in a fixed order on every
// rank, so the reduction, and with it every byte of the result, is the same on every run.
//
//   DistributedDataParallel ddp(model, Communicator::world());
//   ddp.broadcast_parameters();      // identical start
//   loss.backward();                 // buckets start during the pass
//   ddp.synchronize();               // wait, divide by the world size, write back into .grad()
//   opt.step();
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "chainrule/distributed/communicator.h"
#include "chainrule/nn/module.h"

namespace chainrule::distributed {

struct DDPOptions {
  std::int64_t bucket_bytes = std::int64_t{1} << 20;  // a bucket is closed once it holds this many bytes
  // Debug trace: "ready NAME" when a parameter's gradient arrives, "start BUCKET" when a bucket's
  // allreduce is started, "done" when synchronize() has written the mean gradients back.
  std::function<void(const std::string&)> trace;
};

class DistributedDataParallel {
 public:
  DistributedDataParallel(nn::Module& module, Communicator& comm, DDPOptions opts = {});
  ~DistributedDataParallel();  // removes its hooks
  DistributedDataParallel(const DistributedDataParallel&) = delete;
  DistributedDataParallel& operator=(const DistributedDataParallel&) = delete;

  // Copies rank `root`'s parameters and buffers to every rank.
  void broadcast_parameters(int root = 0);

  // Starts the buckets that backward() did not complete (parameters without a gradient, or a rank
  // that had no examples and ran no backward pass: they count as zero), waits for every bucket,
  // and sets each parameter's .grad() to the mean over the ranks. Call once per step, on every
  // rank, after backward() and before the optimiser.
  void synchronize();

  std::size_t num_buckets() const { return buckets_.size(); }
  // Parameter names of bucket b, in the order they fill it.
  std::vector<std::string> bucket_parameters(std::size_t b) const;

  // Time spent in synchronize() (waiting for communication not hidden behind the backward pass,
  // and copying back), summed over calls; for reporting the communication share of a step.
  double synchronize_seconds() const { return sync_seconds_; }

 private:
  struct Slot {
    std::string name;
    Tensor param;
    std::size_t bucket = 0;
    std::int64_t offset = 0;  // in the bucket's flat buffer, in elements
    bool ready = false;
    std::uint64_t hook = 0;
  };
  struct Bucket {
    Tensor flat;                   // the gradients of its parameters, end to end
    std::vector<std::size_t> slots;
    std::size_t pending = 0;       // parameters whose gradient has not arrived this step
    bool started = false;
    Work work;
  };
  void on_grad(std::size_t slot, const Tensor& grad);
  void start_ready_buckets();  // in bucket order, as far as they are complete
  void start(std::size_t bucket);
  void trace(const std::string& event) const;

  nn::Module& module_;
  Communicator& comm_;
  DDPOptions opts_;
  std::vector<Slot> slots_;
  std::vector<Bucket> buckets_;
  std::size_t next_bucket_ = 0;  // buckets start strictly in index order, the same on every rank
  double sync_seconds_ = 0;
};

}  // namespace chainrule::distributed
