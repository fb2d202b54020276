#pragma once
// Mini-batches of a Dataset: an epoch's order is a seeded permutation that depends only on
// (seed, epoch), so a resumed run sees exactly the batches an uninterrupted one would.
#include <cstdint>
#include <vector>

#include "chainrule/data/dataset.h"

namespace chainrule::data {

struct LoaderOptions {
  std::int64_t batch_size = 128;
  bool shuffle = true;
  bool drop_last = false;  // drop a last partial batch
  std::uint64_t seed = 0;
  // Images only (Dataset::height/width set): a random horizontal flip and a random shift of up
  // to `shift` pixels in each direction (zero fill), drawn per example from (seed, epoch, position).
  bool augment = false;
  int shift = 2;
};

struct Batch {
  Tensor x, y;
  std::int64_t size() const { return x.shape()[0]; }
};

class DataLoader {
 public:
  DataLoader(const Dataset& data, LoaderOptions opts);
  std::int64_t batches_per_epoch() const;
  // The order of the examples in `epoch` (identity when not shuffling).
  std::vector<std::int64_t> order(std::int64_t epoch) const;
  // Batch `index` of an epoch with the given order (rows copied into fresh tensors). `epoch`
  // picks the augmentation draws.
  Batch batch(const std::vector<std::int64_t>& order, std::int64_t index, std::int64_t epoch = 0) const;
  // Rank `rank`'s part of batch `index` when `world` processes share it (data-parallel training):
  // rows [rank·B/world, (rank+1)·B/world) of the batch, fewer or none in a last partial batch.
  // Augmentation draws depend on the rows' positions in the epoch, so the parts of all ranks
  // together are exactly batch(order, index, epoch). The batch size must divide by `world`.
  Batch shard(const std::vector<std::int64_t>& order, std::int64_t index, std::int64_t epoch, std::int64_t rank,
              std::int64_t world) const;
  // Every batch of one epoch.
  std::vector<Batch> epoch(std::int64_t epoch) const;
  const LoaderOptions& options() const { return opts_; }
  const Dataset& dataset() const { return data_; }

 private:
  Dataset data_;
  LoaderOptions opts_;
};

// Rows of x (any dtype, [N, ...]) at `index`, copied in that order.
Tensor take_rows(const Tensor& x, const std::int64_t* index, std::int64_t count);

}  // namespace chainrule::data
