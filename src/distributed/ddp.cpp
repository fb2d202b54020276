#include "chainrule/distributed/ddp.h"

#include <fmt/format.h>

#include <chrono>
#include <cstring>

#include "chainrule/errors.h"

namespace chainrule::distributed {

namespace {

template <class T> void divide(Tensor& flat, double by) {
  T* p = flat.mutable_data<T>();
  const T d = static_cast<T>(by);
  for (std::int64_t i = 0, n = flat.numel(); i < n; ++i) p[i] /= d;
}

}  // namespace

DistributedDataParallel::DistributedDataParallel(nn::Module& module, Communicator& comm, DDPOptions opts)
    : module_(module), comm_(comm), opts_(std::move(opts)) {
  if (opts_.bucket_bytes <= 0) throw ValueError(fmt::format("DistributedDataParallel: bucket_bytes must be positive, got {}", opts_.bucket_bytes));
  auto named = module.named_parameters();
  // Reverse order: backward() produces the last layer's gradients first.
  std::int64_t fill = 0;
  for (auto it = named.rbegin(); it != named.rend(); ++it) {
    const Tensor& p = it->second;
    if (!p.requires_grad()) continue;
    const std::int64_t bytes = p.numel() * static_cast<std::int64_t>(itemsize(p.dtype()));
    // As torch's bucket_cap_mb: a bucket is closed once it holds at least bucket_bytes.
    const bool new_bucket = buckets_.empty() || fill >= opts_.bucket_bytes ||
                            slots_[buckets_.back().slots.front()].param.dtype() != p.dtype();
    if (new_bucket) {
      buckets_.emplace_back();
      fill = 0;
    }
    Slot s{.name = it->first, .param = p, .bucket = buckets_.size() - 1, .offset = fill / static_cast<std::int64_t>(itemsize(p.dtype()))};
    buckets_.back().slots.push_back(slots_.size());
    slots_.push_back(std::move(s));
    fill += bytes;
  }
  for (auto& b : buckets_) {
    std::int64_t n = 0;
    for (auto s : b.slots) n += slots_[s].param.numel();
    b.flat = zeros({n}, slots_[b.slots.front()].param.dtype());
    b.pending = b.slots.size();
  }
  for (std::size_t i = 0; i < slots_.size(); ++i)
    slots_[i].hook = slots_[i].param.register_post_accumulate_grad_hook([this, i](const Tensor& g) { on_grad(i, g); });
}

DistributedDataParallel::~DistributedDataParallel() {
  for (auto& s : slots_) s.param.remove_hook(s.hook);
}

std::vector<std::string> DistributedDataParallel::bucket_parameters(std::size_t b) const {
  std::vector<std::string> out;
  for (auto s : buckets_.at(b).slots) out.push_back(slots_[s].name);
  return out;
}

void DistributedDataParallel::trace(const std::string& event) const {
  if (opts_.trace) opts_.trace(event);
}

void DistributedDataParallel::broadcast_parameters(int root) {
  for (auto& [name, p] : module_.named_parameters()) {
    Tensor t = p;
    comm_.broadcast(t, root);
  }
  for (auto& [name, b] : module_.named_buffers()) {
    Tensor t = b;
    comm_.broadcast(t, root);
  }
}

void DistributedDataParallel::on_grad(std::size_t i, const Tensor& grad) {
  Slot& s = slots_[i];
  Bucket& b = buckets_[s.bucket];
  if (s.ready)
    throw DistributedError(fmt::format("DistributedDataParallel: a second gradient for '{}' before synchronize(); call "
                                       "synchronize() after every backward()",
                                       s.name));
  if (grad.level() != 0) throw DistributedError("DistributedDataParallel: backward(create_graph=true) is not supported");
  const std::size_t bytes = static_cast<std::size_t>(grad.numel()) * itemsize(grad.dtype());
  const char* src = static_cast<const char*>(grad.impl()->storage->data) + grad.impl()->offset * static_cast<std::int64_t>(itemsize(grad.dtype()));
  char* dst = static_cast<char*>(b.flat.impl()->storage->data) + s.offset * static_cast<std::int64_t>(itemsize(grad.dtype()));
  std::memcpy(dst, src, bytes);
  s.ready = true;
  --b.pending;
  trace("ready " + s.name);
  start_ready_buckets();
  // MPI progresses non-blocking collectives only inside MPI calls: poke the started ones.
  for (std::size_t k = 0; k < next_bucket_; ++k) buckets_[k].work.test();
}

void DistributedDataParallel::start_ready_buckets() {
  while (next_bucket_ < buckets_.size() && buckets_[next_bucket_].pending == 0) start(next_bucket_++);
}

void DistributedDataParallel::start(std::size_t k) {
  Bucket& b = buckets_[k];
  ++b.flat.impl()->storage->version;
  b.work = comm_.iallreduce_sum(b.flat);
  b.started = true;
  trace(fmt::format("start {}", k));
}

void DistributedDataParallel::synchronize() {
  const auto t0 = std::chrono::steady_clock::now();
  // Gradients that never arrived count as zero; their buckets start now, still in order.
  for (auto& s : slots_) {
    if (s.ready) continue;
    Bucket& b = buckets_[s.bucket];
    const std::size_t bytes = static_cast<std::size_t>(s.param.numel()) * itemsize(s.param.dtype());
    std::memset(static_cast<char*>(b.flat.impl()->storage->data) + s.offset * static_cast<std::int64_t>(itemsize(s.param.dtype())), 0, bytes);
    s.ready = true;
    --b.pending;
  }
  start_ready_buckets();
  const double world = static_cast<double>(comm_.size());
  for (auto& b : buckets_) {
    b.work.wait();
    if (comm_.size() > 1) {
      if (b.flat.dtype() == DType::f32) divide<float>(b.flat, world);
      else divide<double>(b.flat, world);
    }
    for (auto si : b.slots) {
      Slot& s = slots_[si];
      const std::size_t bytes = static_cast<std::size_t>(s.param.numel()) * itemsize(s.param.dtype());
      Tensor g = s.param.grad();
      // Write into the gradient's own buffer when nothing else holds it; else a fresh one.
      if (!g.defined() || g.level() != 0 || g.impl_ptr().use_count() > 2 || g.impl()->storage.use_count() > 1) {
        g = empty(s.param.shape(), s.param.dtype());
        s.param.set_grad(g);
      }
      ++g.impl()->storage->version;
      std::memcpy(static_cast<char*>(g.impl()->storage->data) + g.impl()->offset * static_cast<std::int64_t>(itemsize(g.dtype())),
                  static_cast<const char*>(b.flat.impl()->storage->data) + s.offset * static_cast<std::int64_t>(itemsize(g.dtype())), bytes);
      s.ready = false;
    }
    b.pending = b.slots.size();
    b.started = false;
    b.work = Work();
  }
  next_bucket_ = 0;
  trace("done");
  sync_seconds_ += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

}  // namespace chainrule::distributed
