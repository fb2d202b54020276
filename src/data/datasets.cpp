#include <fmt/format.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <numbers>

#include "chainrule/data/dataset.h"
#include "chainrule/data/loader.h"
#include "chainrule/io/csv.h"
#include "chainrule/io/idx.h"
#include "chainrule/ops/ops.h"
#include "chainrule/tensor/random.h"

namespace chainrule::data {

namespace fs = std::filesystem;

Dataset Dataset::slice(std::int64_t start, std::int64_t stop) const {
  if (start < 0 || stop > size() || start > stop)
    throw ValueError(fmt::format("Dataset::slice: rows [{}, {}) out of range for {} examples", start, stop, size()));
  std::vector<std::int64_t> idx(static_cast<std::size_t>(stop - start));
  for (std::int64_t i = start; i < stop; ++i) idx[static_cast<std::size_t>(i - start)] = i;
  return {name, take_rows(x, idx.data(), stop - start), take_rows(y, idx.data(), stop - start), num_classes, height, width};
}

Dataset Dataset::to(DType dtype) const {
  Dataset d = *this;
  if (x.dtype() != dtype) d.x = cast(x, dtype).detach();
  if (num_classes == 0 && y.dtype() != dtype) d.y = cast(y, dtype).detach();
  return d;
}

// ---- Fashion-MNIST -------------------------------------------------------------------------

namespace {

std::string find_idx(const std::string& dir, const std::string& stem) {
  for (const char* ext : {"", ".gz"}) {
    fs::path p = fs::path(dir) / (stem + ext);
    std::error_code ec;
    if (fs::is_regular_file(p, ec)) return p.string();
  }
  throw IOError(fmt::format("fashion-mnist: no {0} or {0}.gz in {1}; install Debian's dataset-fashion-mnist package "
                            "(apt install dataset-fashion-mnist) or give a directory holding the four IDX files "
                            "(--data fashion-mnist:DIR)",
                            stem, dir));
}

Dataset read_split(const std::string& dir, const std::string& prefix, DType dtype) {
  const std::string ipath = find_idx(dir, prefix + "-images-idx3-ubyte");
  const std::string lpath = find_idx(dir, prefix + "-labels-idx1-ubyte");
  io::IdxArray img = io::read_idx(ipath);
  io::IdxArray lab = io::read_idx(lpath);
  if (img.type_code != 0x08 || img.dims.size() != 3)
    throw IOError(fmt::format("{}: expected unsigned-byte images [N, rows, cols], got type 0x{:02x} with {} dimensions", ipath,
                              img.type_code, img.dims.size()));
  if (lab.type_code != 0x08 || lab.dims.size() != 1)
    throw IOError(fmt::format("{}: expected unsigned-byte labels [N], got type 0x{:02x} with {} dimensions", lpath, lab.type_code,
                              lab.dims.size()));
  const std::int64_t n = img.dims[0], f = img.dims[1] * img.dims[2];
  if (lab.dims[0] != n) throw IOError(fmt::format("{}: {} labels for {} images in {}", lpath, lab.dims[0], n, ipath));
  Dataset d{"fashion-mnist", empty({n, f}, dtype), empty({n}, DType::i64), 10, img.dims[1], img.dims[2]};
  const std::uint8_t* src = img.data.data();
  // Pixels are byte / 255, the correctly rounded quotient in the target precision.
  if (dtype == DType::f32) {
    float* dst = d.x.mutable_data<float>();
    for (std::int64_t i = 0; i < n * f; ++i) dst[i] = static_cast<float>(src[i]) / 255.0f;
  } else {
    double* dst = d.x.mutable_data<double>();
    for (std::int64_t i = 0; i < n * f; ++i) dst[i] = static_cast<double>(src[i]) / 255.0;
  }
  auto* y = d.y.mutable_data<std::int64_t>();
  for (std::int64_t i = 0; i < n; ++i) {
    if (lab.data[static_cast<std::size_t>(i)] > 9)
      throw IOError(fmt::format("{}: label {} of example {} is not a class 0-9 (byte offset {})", lpath,
                                lab.data[static_cast<std::size_t>(i)], i, 8 + i));
    y[i] = lab.data[static_cast<std::size_t>(i)];
  }
  return d;
}

}  // namespace

Splits load_fashion_mnist(const FashionMnistOptions& opts) {
  if (!is_floating(opts.dtype)) throw DTypeError("fashion-mnist: pixels need a float dtype");
  std::error_code ec;
  if (!fs::is_directory(opts.dir, ec))
    throw IOError(fmt::format("fashion-mnist: directory {} does not exist; install Debian's dataset-fashion-mnist package "
                              "(apt install dataset-fashion-mnist) or pass --data fashion-mnist:DIR",
                              opts.dir));
  Dataset train = read_split(opts.dir, "train", opts.dtype);
  Dataset test = read_split(opts.dir, "t10k", opts.dtype);
  if (opts.validation < 0 || opts.validation >= train.size())
    throw ValueError(fmt::format("fashion-mnist: validation size {} must be in [0, {})", opts.validation, train.size()));
  const std::int64_t keep = train.size() - opts.validation;
  Splits s{train.slice(0, keep), train.slice(keep, train.size()), std::move(test)};
  s.val.name = "fashion-mnist/val";
  s.test.name = "fashion-mnist/test";
  return s;
}

// ---- synthetic -----------------------------------------------------------------------------

namespace {

// Box-Muller from two counter-based uniforms.
double gauss(std::uint64_t seed, std::uint64_t c) {
  double u1 = Generator::uniform(seed, 2 * c), u2 = Generator::uniform(seed, 2 * c + 1);
  return std::sqrt(-2 * std::log1p(-u1)) * std::cos(2 * std::numbers::pi * u2);
}

template <class Gen>
Dataset make_set(const std::string& name, std::int64_t n, std::int64_t features, std::int64_t outputs, std::int64_t classes,
                 DType dtype, Gen&& gen) {
  std::vector<double> x(static_cast<std::size_t>(n * features)), y(static_cast<std::size_t>(n * outputs));
  for (std::int64_t i = 0; i < n; ++i) gen(i, &x[static_cast<std::size_t>(i * features)], &y[static_cast<std::size_t>(i * outputs)]);
  Dataset d;
  d.name = name;
  d.num_classes = classes;
  d.x = tensor(x, {n, features}, dtype);
  if (classes > 0) {
    std::vector<std::int64_t> lab(y.begin(), y.end());
    d.y = from_vector(lab, {n});
  } else {
    d.y = tensor(y, {n, outputs}, dtype);
  }
  return d;
}

}  // namespace

Splits make_spirals(const SpiralsOptions& o) {
  auto one = [&](const char* split, std::int64_t n, std::uint64_t stream) {
    const std::uint64_t seed = o.seed * 0x9E3779B97F4A7C15ull + stream;
    return make_set(std::string("spirals/") + split, n, 2, 1, 2, o.dtype, [&](std::int64_t i, double* x, double* y) {
      const std::uint64_t c = static_cast<std::uint64_t>(i);
      const int cls = static_cast<int>(i % 2);
      // Radius grows with the angle; the second spiral is the first rotated by π.
      const double r = std::sqrt(Generator::uniform(seed, 4 * c));
      const double t = r * o.turns * 2 * std::numbers::pi;
      x[0] = r * std::cos(t + cls * std::numbers::pi) + o.noise * gauss(seed ^ 0xA5A5, 2 * c);
      x[1] = r * std::sin(t + cls * std::numbers::pi) + o.noise * gauss(seed ^ 0xA5A5, 2 * c + 1);
      x[0] *= 2, x[1] *= 2;  // spread to about [-2, 2]
      y[0] = cls;
    });
  };
  return {one("train", o.train, 1), one("val", o.validation, 2), one("test", o.test, 3)};
}

Splits make_regression_1d(const RegressionOptions& o) {
  auto one = [&](const char* split, std::int64_t n, std::uint64_t stream) {
    const std::uint64_t seed = o.seed * 0x9E3779B97F4A7C15ull + stream;
    return make_set(std::string("regression/") + split, n, 1, 1, 0, o.dtype, [&](std::int64_t i, double* x, double* y) {
      const std::uint64_t c = static_cast<std::uint64_t>(i);
      x[0] = -2 + 4 * Generator::uniform(seed, c);
      y[0] = std::sin(3 * x[0]) + x[0] / 2 + o.noise * gauss(seed ^ 0x5A5A, c);
    });
  };
  return {one("train", o.train, 1), one("val", o.validation, 2), one("test", o.test, 3)};
}

// ---- CSV -----------------------------------------------------------------------------------

Splits load_csv(const std::string& path, const CsvOptions& o) {
  io::CsvTable t = io::read_csv(path, o.label_column);
  if (!(o.validation_fraction >= 0 && o.test_fraction >= 0 && o.validation_fraction + o.test_fraction < 1))
    throw ValueError(fmt::format("csv: validation {} and test {} fractions must be >= 0 and sum below 1", o.validation_fraction,
                                 o.test_fraction));
  std::int64_t classes = 0;
  for (auto l : t.labels) classes = std::max(classes, l + 1);
  Dataset all{"csv", tensor(t.values, {t.rows, t.cols}, o.dtype), from_vector(t.labels, {t.rows}), classes};
  // One fixed shuffle, so the splits do not depend on the training seed.
  std::vector<std::int64_t> perm(static_cast<std::size_t>(t.rows));
  for (std::int64_t i = 0; i < t.rows; ++i) perm[static_cast<std::size_t>(i)] = i;
  for (std::int64_t i = t.rows - 1; i > 0; --i)
    std::swap(perm[static_cast<std::size_t>(i)],
              perm[static_cast<std::size_t>(Generator::bits(0xC5F, static_cast<std::uint64_t>(i)) % static_cast<std::uint64_t>(i + 1))]);
  all.x = take_rows(all.x, perm.data(), t.rows);
  all.y = take_rows(all.y, perm.data(), t.rows);
  const auto n_test = static_cast<std::int64_t>(std::floor(o.test_fraction * static_cast<double>(t.rows)));
  const auto n_val = static_cast<std::int64_t>(std::floor(o.validation_fraction * static_cast<double>(t.rows)));
  const std::int64_t n_train = t.rows - n_test - n_val;
  if (n_train <= 0) throw IOError(fmt::format("{}: {} rows are too few to split into train, validation and test", path, t.rows));
  Splits s{all.slice(0, n_train), all.slice(n_train, n_train + n_val), all.slice(n_train + n_val, t.rows)};
  s.train.name = "csv/train", s.val.name = "csv/val", s.test.name = "csv/test";
  return s;
}

Splits load_by_name(std::string_view spec, DType dtype) {
  if (spec == "fashion-mnist") return load_fashion_mnist({.dtype = dtype});
  if (spec.starts_with("fashion-mnist:")) return load_fashion_mnist({.dir = std::string(spec.substr(14)), .dtype = dtype});
  if (spec == "spirals") return make_spirals({.dtype = dtype});
  if (spec == "regression") return make_regression_1d({.dtype = dtype});
  if (spec.starts_with("csv:") && spec.size() > 4) return load_csv(std::string(spec.substr(4)), {.dtype = dtype});
  throw ValueError(fmt::format("unknown data set '{}' (fashion-mnist[:DIR], spirals, regression, csv:PATH)", spec));
}

}  // namespace chainrule::data
