#pragma once
// Data sets as whole tensors in memory: inputs x [N, features] (float) and targets y ([N] int64
// class labels, or [N, outputs] float for regression), with train / validation / test splits.
#include <cstdint>
#include <string>
#include <string_view>

#include "chainrule/tensor/tensor.h"

namespace chainrule::data {

struct Dataset {
  std::string name;
  Tensor x;                      // [N, features], f32 or f64
  Tensor y;                      // [N] int64 labels, or [N, outputs] float targets
  std::int64_t num_classes = 0;  // 0 for regression
  std::int64_t height = 0, width = 0;  // images: each row of x is height × width pixels, row-major
  std::int64_t size() const { return x.defined() ? x.shape()[0] : 0; }
  std::int64_t features() const { return x.shape()[1]; }
  Dataset slice(std::int64_t start, std::int64_t stop) const;  // rows [start, stop), copied
  Dataset to(DType dtype) const;                                // x converted
};

struct Splits {
  Dataset train, val, test;
};

// Fashion-MNIST (Xiao et al. 2017): 60,000 training and 10,000 test images of 28×28 bytes in 10
// classes, flattened to 784 features, pixel = byte / 255 exactly. The validation split is the
// last `validation` images of the training file, held out of `train` (for tuning without the
// test set).
inline constexpr std::string_view kFashionMnistDir = "/usr/share/datasets/fashion-mnist";
struct FashionMnistOptions {
  std::string dir = std::string(kFashionMnistDir);  // holds {train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz]
  std::int64_t validation = 5000;
  DType dtype = DType::f32;
};
// Throws IOError naming the missing file and the Debian package (dataset-fashion-mnist) to
// install, or the malformed file, field and offset.
Splits load_fashion_mnist(const FashionMnistOptions& opts = {});
inline constexpr const char* kFashionMnistClasses[10] = {"T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                                                          "Sandal",      "Shirt",   "Sneaker",  "Bag",   "Ankle boot"};

// Two interleaved spirals in the plane, 2 classes (a classic hard case for a small MLP).
struct SpiralsOptions {
  std::int64_t train = 2000, validation = 500, test = 500;  // examples, split evenly between classes
  double noise = 0.04;
  double turns = 1.5;
  std::uint64_t seed = 0;
  DType dtype = DType::f32;
};
Splits make_spirals(const SpiralsOptions& opts = {});

// 1-D regression: y = sin(3x) + x/2 + noise, x uniform in [-2, 2]; y is [N, 1].
struct RegressionOptions {
  std::int64_t train = 1000, validation = 200, test = 200;
  double noise = 0.1;
  std::uint64_t seed = 0;
  DType dtype = DType::f32;
};
Splits make_regression_1d(const RegressionOptions& opts = {});

// A numeric CSV table with an integer label column (io::read_csv). The rows are shuffled once
// with a fixed seed and split test_fraction / validation_fraction / the rest for training.
struct CsvOptions {
  int label_column = -1;
  double validation_fraction = 0.15, test_fraction = 0.15;
  DType dtype = DType::f32;
};
Splits load_csv(const std::string& path, const CsvOptions& opts = {});

// "fashion-mnist", "fashion-mnist:DIR", "spirals", "regression", "csv:PATH".
Splits load_by_name(std::string_view spec, DType dtype = DType::f32);

}  // namespace chainrule::data
