// Run under mpirun: one data-parallel step of an MLP with small gradient buckets. Prints, on rank
// 0, the order of events: DDP's trace ("ready P", "start B", "done") and "vjp probe" when the
// backward pass runs its last VJP (an identity primitive on the input). Then checks that every
// gradient is the mean of the ranks' local gradients, with the same bytes on every rank, and
// prints "mean ok" or "mean wrong".
#include <fmt/format.h>

#include <cmath>
#include <vector>

#include "chainrule/chainrule.h"
#include "chainrule/distributed/communicator.h"
#include "chainrule/distributed/ddp.h"
#include "chainrule/nn/spec.h"

using namespace chainrule;

namespace {

std::vector<std::string> g_events;

// The identity, whose VJP records when it runs: applied to the input, it is the last VJP of a pass.
const Primitive probe_p{
    .name = "probe",
    .forward = [](std::span<const Tensor> x, const Params&) { return x[0] * 1.0; },
    .jvp = [](int, const Tensor& t, const Ctx&) { return t; },
    .vjp =
        [](int, const Tensor& ct, const Ctx&) {
          g_events.push_back("vjp probe");
          return ct;
        },
    .batching = Batching::Leading,
    .saves = kSaveNone,
};

}  // namespace

int main() {
  auto& comm = distributed::Communicator::world();
  comm.set_timeout(60);
  auto model = nn::build_model("mlp:64-256-256-256-10");
  Generator init(7);
  {
    NoGradGuard ng;
    for (auto& p : model->parameters()) p.copy_(randn(p.shape(), init) * 0.05);
  }
  // 256·256 floats = 256 KiB: buckets of at least 200 KiB hold one hidden layer each, the last
  // one also the output layer: three buckets.
  distributed::DistributedDataParallel ddp(*model, comm, {.bucket_bytes = 200 * 1024,
                                                          .trace = [](const std::string& e) { g_events.push_back(e); }});
  ddp.broadcast_parameters();
  Generator data(100 + static_cast<std::uint64_t>(comm.rank()));  // each rank its own examples
  Tensor x = randn({32, 64}, data).requires_grad_();
  Tensor y = from_vector(std::vector<std::int64_t>(32, comm.rank() % 10));
  cross_entropy(model->forward(bind(probe_p, {x})), y).backward();
  std::vector<Tensor> local;
  for (auto& p : model->parameters()) local.push_back(p.grad().contiguous_clone());
  ddp.synchronize();

  bool ok = true;
  std::size_t i = 0;
  for (auto& p : model->parameters()) {
    Tensor expected = local[i++];
    comm.allreduce_sum(expected);
    auto e = expected.to_vector<float>(), g = p.grad().to_vector<float>();
    for (std::size_t k = 0; k < e.size(); ++k)
      if (std::abs(e[k] / static_cast<float>(comm.size()) - g[k]) > 1e-6f * (1 + std::abs(g[k]))) ok = false;
  }
  // Every rank holds the same bytes (else the replicas would drift apart).
  for (auto& p : model->parameters()) {
    Tensor root = p.grad().contiguous_clone();
    comm.broadcast(root, 0);
    if (root.to_vector<float>() != p.grad().to_vector<float>()) ok = false;
  }
  Tensor all_ok = from_vector(std::vector<std::int64_t>{ok ? 0 : 1});
  comm.allreduce_sum(all_ok);
  if (comm.rank() == 0) {
    fmt::print("buckets {}\n", ddp.num_buckets());
    for (auto& e : g_events) fmt::print("{}\n", e);
    fmt::print("{}\n", all_ok.data<std::int64_t>()[0] == 0 ? "mean ok" : "mean wrong");
  }
  return 0;
}
