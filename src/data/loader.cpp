#include "chainrule/data/loader.h"

#include <fmt/format.h>

#include <cstring>

#include "chainrule/tensor/random.h"

namespace chainrule::data {

Tensor take_rows(const Tensor& x, const std::int64_t* index, std::int64_t count) {
  if (x.dim() < 1) throw ShapeError(fmt::format("take_rows: needs a tensor with a leading axis, got {}", x.shape().str()));
  Shape s = x.shape();
  const std::int64_t n = s[0];
  s[0] = count;
  Tensor out = empty(s, x.dtype());
  const std::size_t row = static_cast<std::size_t>(s.slice(1).numel()) * itemsize(x.dtype());
  Tensor c = concrete(x);
  const char* src = static_cast<const char*>(c.impl()->storage->data) + c.impl()->offset * static_cast<std::int64_t>(itemsize(x.dtype()));
  char* dst = static_cast<char*>(out.impl()->storage->data);
  for (std::int64_t i = 0; i < count; ++i) {
    if (index[i] < 0 || index[i] >= n) throw ValueError(fmt::format("take_rows: index {} out of range for {} rows", index[i], n));
    if (row) std::memcpy(dst + static_cast<std::size_t>(i) * row, src + static_cast<std::size_t>(index[i]) * row, row);
  }
  return out;
}

DataLoader::DataLoader(const Dataset& data, LoaderOptions opts) : data_(data), opts_(opts) {
  if (opts.batch_size <= 0) throw ValueError(fmt::format("DataLoader: batch size must be positive, got {}", opts.batch_size));
  if (data.size() == 0) throw ValueError(fmt::format("DataLoader: data set '{}' is empty", data.name));
}

std::int64_t DataLoader::batches_per_epoch() const {
  const std::int64_t n = data_.size(), b = opts_.batch_size;
  return opts_.drop_last ? n / b : (n + b - 1) / b;
}

std::vector<std::int64_t> DataLoader::order(std::int64_t epoch) const {
  const std::int64_t n = data_.size();
  std::vector<std::int64_t> perm(static_cast<std::size_t>(n));
  for (std::int64_t i = 0; i < n; ++i) perm[static_cast<std::size_t>(i)] = i;
  if (!opts_.shuffle) return perm;
  // Fisher-Yates with counter-based draws: draw i of epoch e is bits(seed', e·2⁴⁰ + i).
  const std::uint64_t seed = opts_.seed ^ 0xD1B54A32D192ED03ull;
  const std::uint64_t base = static_cast<std::uint64_t>(epoch) << 40;
  for (std::int64_t i = n - 1; i > 0; --i) {
    auto j = Generator::bits(seed, base + static_cast<std::uint64_t>(i)) % static_cast<std::uint64_t>(i + 1);
    std::swap(perm[static_cast<std::size_t>(i)], perm[static_cast<std::size_t>(j)]);
  }
  return perm;
}

namespace {

// Flips and shifts each image row of x in place; draw k of the epoch is bits(seed, epoch·2⁴⁰ + k).
template <class T>
void augment_rows(T* x, std::int64_t rows, std::int64_t h, std::int64_t w, int shift, std::uint64_t seed, std::uint64_t base,
                  std::int64_t first_position) {
  std::vector<T> tmp(static_cast<std::size_t>(h * w));
  const std::uint64_t span = static_cast<std::uint64_t>(2 * shift + 1);
  for (std::int64_t r = 0; r < rows; ++r) {
    const std::uint64_t bits = Generator::bits(seed, base + static_cast<std::uint64_t>(first_position + r));
    const bool flip = bits & 1;
    const std::int64_t dx = static_cast<std::int64_t>((bits >> 8) % span) - shift;
    const std::int64_t dy = static_cast<std::int64_t>((bits >> 24) % span) - shift;
    T* img = x + r * h * w;
    std::copy(img, img + h * w, tmp.begin());
    for (std::int64_t i = 0; i < h; ++i) {
      const std::int64_t si = i - dy;
      for (std::int64_t j = 0; j < w; ++j) {
        std::int64_t sj = j - dx;
        if (flip) sj = w - 1 - sj;
        img[i * w + j] = (si >= 0 && si < h && sj >= 0 && sj < w) ? tmp[static_cast<std::size_t>(si * w + sj)] : T(0);
      }
    }
  }
}

}  // namespace

Batch DataLoader::batch(const std::vector<std::int64_t>& order, std::int64_t index, std::int64_t epoch) const {
  return shard(order, index, epoch, 0, 1);
}

Batch DataLoader::shard(const std::vector<std::int64_t>& order, std::int64_t index, std::int64_t epoch, std::int64_t rank,
                        std::int64_t world) const {
  const std::int64_t n = static_cast<std::int64_t>(order.size()), b = opts_.batch_size;
  if (index < 0 || index >= batches_per_epoch())
    throw ValueError(fmt::format("DataLoader: batch {} out of range ({} per epoch)", index, batches_per_epoch()));
  if (world <= 0 || rank < 0 || rank >= world || b % world != 0)
    throw ValueError(fmt::format("DataLoader: cannot take part {} of {} of a batch of {}", rank, world, b));
  const std::int64_t part = b / world;
  const std::int64_t start = std::min(n, index * b + rank * part), count = std::max<std::int64_t>(0, std::min(part, n - start));
  Batch out{take_rows(data_.x, order.data() + start, count), take_rows(data_.y, order.data() + start, count)};
  if (opts_.augment && data_.height > 0 && data_.width > 0 && opts_.shift >= 0) {
    const std::uint64_t seed = opts_.seed ^ 0x94D049BB133111EBull;
    const std::uint64_t base = static_cast<std::uint64_t>(epoch) << 40;
    if (out.x.dtype() == DType::f32)
      augment_rows(out.x.mutable_data<float>(), count, data_.height, data_.width, opts_.shift, seed, base, start);
    else
      augment_rows(out.x.mutable_data<double>(), count, data_.height, data_.width, opts_.shift, seed, base, start);
  }
  return out;
}

std::vector<Batch> DataLoader::epoch(std::int64_t e) const {
  auto o = order(e);
  std::vector<Batch> out;
  for (std::int64_t i = 0; i < batches_per_epoch(); ++i) out.push_back(batch(o, i, e));
  return out;
}

}  // namespace chainrule::data
