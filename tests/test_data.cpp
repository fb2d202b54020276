// Data: the seeded loader, augmentation, synthetic sets, Fashion-MNIST (from small IDX files
// written here, and the real files when installed), CSV tables, and malformed inputs.
#include <gtest/gtest.h>
#include <zlib.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <numeric>

#include "chainrule/chainrule.h"
#include "chainrule/data/dataset.h"
#include "chainrule/data/loader.h"

using namespace chainrule;
using namespace chainrule::data;
namespace fs = std::filesystem;

namespace {

Dataset counting_set(std::int64_t n) {
  std::vector<double> x(static_cast<std::size_t>(n * 2));
  std::vector<std::int64_t> y(static_cast<std::size_t>(n));
  for (std::int64_t i = 0; i < n; ++i) {
    x[static_cast<std::size_t>(2 * i)] = static_cast<double>(i);
    x[static_cast<std::size_t>(2 * i + 1)] = -static_cast<double>(i);
    y[static_cast<std::size_t>(i)] = i % 3;
  }
  return {"count", tensor(x, {n, 2}, DType::f64), from_vector(y, {n}), 3};
}

struct TempDir {
  fs::path path;
  explicit TempDir(const std::string& name) : path(fs::temp_directory_path() / name) {
    fs::remove_all(path);
    fs::create_directories(path);
  }
  ~TempDir() { fs::remove_all(path); }
};

std::string idx_bytes(std::vector<std::uint32_t> dims, const std::vector<std::uint8_t>& payload) {
  std::string s{'\0', '\0', '\x08', static_cast<char>(dims.size())};
  for (auto d : dims)
    for (int k = 3; k >= 0; --k) s += static_cast<char>((d >> (8 * k)) & 0xFF);
  s.append(payload.begin(), payload.end());
  return s;
}
void write_raw(const fs::path& p, const std::string& bytes) { std::ofstream(p, std::ios::binary) << bytes; }
void write_gz(const fs::path& p, const std::string& bytes) {
  gzFile f = gzopen(p.string().c_str(), "wb");
  gzwrite(f, bytes.data(), static_cast<unsigned>(bytes.size()));
  gzclose(f);
}

// A tiny Fashion-MNIST-shaped directory: n train and m test images of 4×3 pixels.
void write_fake_fashion(const fs::path& dir, std::int64_t n, std::int64_t m, bool gz) {
  auto images = [](std::int64_t count, int salt) {
    std::vector<std::uint8_t> px(static_cast<std::size_t>(count * 12));
    for (std::size_t i = 0; i < px.size(); ++i) px[i] = static_cast<std::uint8_t>((i * 37 + static_cast<std::size_t>(salt)) % 256);
    return px;
  };
  auto labels = [](std::int64_t count) {
    std::vector<std::uint8_t> l(static_cast<std::size_t>(count));
    for (std::size_t i = 0; i < l.size(); ++i) l[i] = static_cast<std::uint8_t>(i % 10);
    return l;
  };
  auto write = gz ? write_gz : write_raw;
  const char* ext = gz ? ".gz" : "";
  write(dir / (std::string("train-images-idx3-ubyte") + ext), idx_bytes({static_cast<std::uint32_t>(n), 4, 3}, images(n, 0)));
  write(dir / (std::string("train-labels-idx1-ubyte") + ext), idx_bytes({static_cast<std::uint32_t>(n)}, labels(n)));
  write(dir / (std::string("t10k-images-idx3-ubyte") + ext), idx_bytes({static_cast<std::uint32_t>(m), 4, 3}, images(m, 5)));
  write(dir / (std::string("t10k-labels-idx1-ubyte") + ext), idx_bytes({static_cast<std::uint32_t>(m)}, labels(m)));
}

}  // namespace

// ---- loader --------------------------------------------------------------------------------

TEST(Loader, SeededShuffleIsDeterministicAndAPermutation) {
  Dataset d = counting_set(103);
  DataLoader a(d, {.batch_size = 10, .seed = 7}), b(d, {.batch_size = 10, .seed = 7}), c(d, {.batch_size = 10, .seed = 8});
  EXPECT_EQ(a.order(0), b.order(0));
  EXPECT_EQ(a.order(5), b.order(5));
  EXPECT_NE(a.order(0), a.order(1));
  EXPECT_NE(a.order(0), c.order(0));
  auto o = a.order(3);
  std::sort(o.begin(), o.end());
  std::vector<std::int64_t> id(103);
  std::iota(id.begin(), id.end(), 0);
  EXPECT_EQ(o, id);
  DataLoader plain(d, {.batch_size = 10, .shuffle = false});
  EXPECT_EQ(plain.order(4), id);
}

TEST(Loader, BatchesFollowTheOrderWithOptionalPartialBatch) {
  Dataset d = counting_set(103);
  DataLoader keep(d, {.batch_size = 10, .seed = 1}), drop(d, {.batch_size = 10, .drop_last = true, .seed = 1});
  EXPECT_EQ(keep.batches_per_epoch(), 11);
  EXPECT_EQ(drop.batches_per_epoch(), 10);
  auto order = keep.order(2);
  auto batches = keep.epoch(2);
  ASSERT_EQ(batches.size(), 11u);
  EXPECT_EQ(batches.back().size(), 3);
  std::int64_t k = 0;
  for (auto& b : batches) {
    auto x = b.x.to_vector<double>();
    auto y = b.y.to_vector<std::int64_t>();
    for (std::int64_t i = 0; i < b.size(); ++i, ++k) {
      EXPECT_EQ(x[static_cast<std::size_t>(2 * i)], static_cast<double>(order[static_cast<std::size_t>(k)]));
      EXPECT_EQ(y[static_cast<std::size_t>(i)], order[static_cast<std::size_t>(k)] % 3);
    }
  }
  EXPECT_EQ(k, 103);
  EXPECT_EQ(drop.epoch(0).back().size(), 10);
  EXPECT_THROW(DataLoader(d, {.batch_size = 0}), ValueError);
  EXPECT_THROW(keep.batch(order, 11), ValueError);
}

TEST(Loader, AugmentationIsSeededAndFlipsOrShiftsImages) {
  // 4 images of 2×3 pixels with distinct values.
  std::vector<double> px(24);
  std::iota(px.begin(), px.end(), 1.0);
  Dataset d{"img", tensor(px, {4, 6}, DType::f64), from_vector<std::int64_t>({0, 1, 0, 1}), 2, 2, 3};
  DataLoader a(d, {.batch_size = 4, .shuffle = false, .seed = 3, .augment = true, .shift = 0});
  auto o = a.order(0);
  auto b1 = a.batch(o, 0, 0).x.to_vector<double>(), b2 = a.batch(o, 0, 0).x.to_vector<double>();
  EXPECT_EQ(b1, b2);
  int flipped = 0;
  for (int n = 0; n < 4; ++n) {
    const double* src = px.data() + 6 * n;
    const double* got = b1.data() + 6 * n;
    bool same = std::equal(src, src + 6, got);
    bool mirror = true;
    for (int i = 0; i < 2; ++i)
      for (int j = 0; j < 3; ++j) mirror &= got[i * 3 + j] == src[i * 3 + (2 - j)];
    EXPECT_TRUE(same || mirror) << "image " << n;
    flipped += !same;
  }
  // Over several epochs some images are flipped and some are not.
  int total = flipped;
  for (int e = 1; e < 6; ++e) {
    auto be = a.batch(o, 0, e).x.to_vector<double>();
    for (int n = 0; n < 4; ++n) total += !std::equal(px.data() + 6 * n, px.data() + 6 * n + 6, be.data() + 6 * n);
  }
  EXPECT_GT(total, 0);
  EXPECT_LT(total, 24);
  // With shifts pixels move or become zero, but no value appears that the image lacks.
  DataLoader s(d, {.batch_size = 4, .shuffle = false, .seed = 3, .augment = true, .shift = 1});
  auto bs = s.batch(o, 0, 0).x.to_vector<double>();
  for (int n = 0; n < 4; ++n)
    for (int k = 0; k < 6; ++k) {
      double v = bs[static_cast<std::size_t>(6 * n + k)];
      EXPECT_TRUE(v == 0 || (v >= 1 + 6 * n && v <= 6 + 6 * n)) << v;
    }
}

// ---- synthetic sets ------------------------------------------------------------------------

TEST(Synthetic, SpiralsAreBalancedDeterministicAndSeeded) {
  Splits s = make_spirals({.train = 200, .validation = 50, .test = 60, .seed = 4});
  EXPECT_EQ(s.train.size(), 200);
  EXPECT_EQ(s.val.size(), 50);
  EXPECT_EQ(s.test.size(), 60);
  EXPECT_EQ(s.train.features(), 2);
  EXPECT_EQ(s.train.num_classes, 2);
  auto y = s.train.y.to_vector<std::int64_t>();
  EXPECT_EQ(std::count(y.begin(), y.end(), 1), 100);
  Splits again = make_spirals({.train = 200, .validation = 50, .test = 60, .seed = 4});
  EXPECT_EQ(max_abs_diff(s.train.x, again.train.x), 0.0);
  Splits other = make_spirals({.train = 200, .validation = 50, .test = 60, .seed = 5});
  EXPECT_GT(max_abs_diff(s.train.x, other.train.x), 0.0);
  EXPECT_GT(max_abs_diff(slice(s.train.x, 0, 0, 50), slice(s.test.x, 0, 0, 50)), 0.0);
}

TEST(Synthetic, RegressionTargetsAreAColumn) {
  Splits s = make_regression_1d({.train = 50, .validation = 10, .test = 10, .noise = 0});
  EXPECT_EQ(s.train.y.shape(), (Shape{50, 1}));
  EXPECT_EQ(s.train.num_classes, 0);
  auto x = s.train.x.to_vector<float>();
  auto y = s.train.y.to_vector<float>();
  for (std::size_t i = 0; i < x.size(); ++i) EXPECT_NEAR(y[i], std::sin(3 * x[i]) + x[i] / 2, 1e-5);
}

// ---- Fashion-MNIST -------------------------------------------------------------------------

TEST(FashionMnist, ReadsRawAndGzipDirectoriesWithExactPixels) {
  for (bool gz : {false, true}) {
    TempDir dir(gz ? "chainrule_fm_gz" : "chainrule_fm_raw");
    write_fake_fashion(dir.path, 30, 7, gz);
    Splits s = load_fashion_mnist({.dir = dir.path.string(), .validation = 5});
    EXPECT_EQ(s.train.size(), 25);
    EXPECT_EQ(s.val.size(), 5);
    EXPECT_EQ(s.test.size(), 7);
    EXPECT_EQ(s.train.features(), 12);
    EXPECT_EQ(s.train.height, 4);
    EXPECT_EQ(s.train.width, 3);
    auto x = s.train.x.to_vector<float>();
    for (std::size_t i = 0; i < x.size(); ++i) {
      auto byte = static_cast<std::uint8_t>((i * 37) % 256);
      EXPECT_EQ(x[i], static_cast<float>(byte) / 255.0f);  // byte / 255, correctly rounded
    }
    // The validation split is the end of the training file.
    auto v = s.val.x.to_vector<float>();
    EXPECT_EQ(v[0], static_cast<float>(static_cast<std::uint8_t>((25 * 12 * 37) % 256)) / 255.0f);
    EXPECT_EQ(s.val.y.to_vector<std::int64_t>()[0], 25 % 10);
    Splits d64 = load_fashion_mnist({.dir = dir.path.string(), .validation = 5, .dtype = DType::f64});
    EXPECT_EQ(d64.test.x.to_vector<double>()[1], static_cast<double>((37 + 5) % 256) / 255.0);
  }
}

TEST(FashionMnist, MissingOrMalformedFilesSayWhatIsWrong) {
  try {
    load_fashion_mnist({.dir = "/nonexistent/fashion"});
    FAIL();
  } catch (const IOError& e) {
    EXPECT_NE(std::string(e.what()).find("dataset-fashion-mnist"), std::string::npos) << e.what();
  }
  TempDir dir("chainrule_fm_bad");
  write_fake_fashion(dir.path, 10, 4, false);
  fs::remove(dir.path / "t10k-labels-idx1-ubyte");
  try {
    load_fashion_mnist({.dir = dir.path.string(), .validation = 2});
    FAIL();
  } catch (const IOError& e) {
    EXPECT_NE(std::string(e.what()).find("t10k-labels-idx1-ubyte"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("dataset-fashion-mnist"), std::string::npos) << e.what();
  }
  write_raw(dir.path / "t10k-labels-idx1-ubyte", idx_bytes({4}, {1, 2, 12, 3}));  // label 12
  EXPECT_THROW(load_fashion_mnist({.dir = dir.path.string(), .validation = 2}), IOError);
  write_raw(dir.path / "t10k-labels-idx1-ubyte", idx_bytes({5}, {1, 2, 3, 4, 5}));  // 5 labels for 4 images
  EXPECT_THROW(load_fashion_mnist({.dir = dir.path.string(), .validation = 2}), IOError);
  write_raw(dir.path / "t10k-labels-idx1-ubyte", idx_bytes({4}, {1, 2}));  // truncated payload
  EXPECT_THROW(load_fashion_mnist({.dir = dir.path.string(), .validation = 2}), IOError);
  write_raw(dir.path / "t10k-labels-idx1-ubyte", idx_bytes({4}, {1, 2, 3, 4}));
  EXPECT_THROW(load_fashion_mnist({.dir = dir.path.string(), .validation = 10}), ValueError);
  EXPECT_NO_THROW(load_fashion_mnist({.dir = dir.path.string(), .validation = 2}));
}

TEST(FashionMnist, TheInstalledDataSetWhenPresent) {
  if (!fs::exists(std::string(kFashionMnistDir) + "/train-images-idx3-ubyte.gz") &&
      !fs::exists(std::string(kFashionMnistDir) + "/train-images-idx3-ubyte"))
    GTEST_SKIP() << "dataset-fashion-mnist is not installed";
  Splits s = load_fashion_mnist();
  EXPECT_EQ(s.train.size(), 55000);
  EXPECT_EQ(s.val.size(), 5000);
  EXPECT_EQ(s.test.size(), 10000);
  EXPECT_EQ(s.train.features(), 784);
  auto y = s.test.y.to_vector<std::int64_t>();
  for (std::int64_t c = 0; c < 10; ++c) EXPECT_EQ(std::count(y.begin(), y.end(), c), 1000);
  float mx = 0;
  for (float v : s.test.x.to_vector<float>()) mx = std::max(mx, v);
  EXPECT_EQ(mx, 1.0f);
}

// ---- CSV and names -------------------------------------------------------------------------

TEST(DataCsv, SplitsATableIntoTrainValidationAndTest) {
  TempDir dir("chainrule_csv");
  std::string text = "a,b,label\n";
  for (int i = 0; i < 40; ++i) text += std::to_string(i) + "," + std::to_string(i * 0.5) + "," + std::to_string(i % 3) + "\n";
  write_raw(dir.path / "t.csv", text);
  Splits s = load_csv((dir.path / "t.csv").string());
  EXPECT_EQ(s.train.size() + s.val.size() + s.test.size(), 40);
  EXPECT_EQ(s.test.size(), 6);
  EXPECT_EQ(s.val.size(), 6);
  EXPECT_EQ(s.train.num_classes, 3);
  EXPECT_EQ(s.train.features(), 2);
  // Every row appears once, with its own label.
  std::vector<double> firsts;
  for (auto* part : {&s.train, &s.val, &s.test}) {
    auto x = part->x.to_vector<float>();
    auto y = part->y.to_vector<std::int64_t>();
    for (std::int64_t i = 0; i < part->size(); ++i) {
      firsts.push_back(x[static_cast<std::size_t>(2 * i)]);
      EXPECT_EQ(y[static_cast<std::size_t>(i)], static_cast<std::int64_t>(x[static_cast<std::size_t>(2 * i)]) % 3);
    }
  }
  std::sort(firsts.begin(), firsts.end());
  for (int i = 0; i < 40; ++i) EXPECT_EQ(firsts[static_cast<std::size_t>(i)], i);
  write_raw(dir.path / "bad.csv", "1,2,0\n3,x,1\n");
  EXPECT_THROW(load_csv((dir.path / "bad.csv").string()), IOError);
  EXPECT_EQ(load_by_name("csv:" + (dir.path / "t.csv").string()).train.num_classes, 3);
}

TEST(DataCsv, DataNamesAreCheckedWithAClearError) {
  EXPECT_EQ(load_by_name("spirals").train.num_classes, 2);
  EXPECT_THROW(load_by_name("mnist"), ValueError);
  EXPECT_THROW(load_by_name("csv:"), ValueError);
  EXPECT_THROW(load_by_name("csv:/nonexistent.csv"), IOError);
}
