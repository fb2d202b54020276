#pragma once
// Shape: a small vector of dimensions, stored inline up to rank 6 so that creating a tensor
// does not allocate for its shape. Higher ranks spill to the heap.
#include <algorithm>
#include <cstdint>
#include <initializer_list>
#include <memory>
#include <span>
#include <string>
#include <vector>

namespace chainrule {

class Shape {
 public:
  static constexpr std::size_t kInline = 6;
  Shape() = default;
  Shape(std::initializer_list<std::int64_t> dims) { assign(dims.begin(), dims.size()); }
  explicit Shape(std::span<const std::int64_t> dims) { assign(dims.data(), dims.size()); }
  Shape(const std::vector<std::int64_t>& dims) { assign(dims.data(), dims.size()); }
  static Shape filled(std::size_t rank, std::int64_t value) {
    Shape s;
    s.resize(rank, value);
    return s;
  }
  Shape(const Shape& o) { assign(o.data(), o.size_); }
  Shape& operator=(const Shape& o) {
    if (this != &o) assign(o.data(), o.size_);
    return *this;
  }
  Shape(Shape&& o) noexcept { *this = std::move(o); }
  Shape& operator=(Shape&& o) noexcept {
    if (this == &o) return *this;
    heap_ = std::move(o.heap_);
    cap_ = o.cap_;
    size_ = o.size_;
    if (!heap_) std::copy_n(o.inline_, size_, inline_);
    o.size_ = 0;
    o.cap_ = kInline;
    return *this;
  }

  std::size_t size() const { return size_; }
  bool empty() const { return size_ == 0; }
  std::int64_t* data() { return heap_ ? heap_.get() : inline_; }
  const std::int64_t* data() const { return heap_ ? heap_.get() : inline_; }
  std::int64_t& operator[](std::size_t i) { return data()[i]; }
  std::int64_t operator[](std::size_t i) const { return data()[i]; }
  std::int64_t* begin() { return data(); }
  std::int64_t* end() { return data() + size_; }
  const std::int64_t* begin() const { return data(); }
  const std::int64_t* end() const { return data() + size_; }
  std::int64_t back() const { return data()[size_ - 1]; }
  operator std::span<const std::int64_t>() const { return {data(), size_}; }
  std::vector<std::int64_t> vec() const { return {begin(), end()}; }

  void push_back(std::int64_t v) {
    reserve(size_ + 1);
    data()[size_++] = v;
  }
  void resize(std::size_t n, std::int64_t fill = 0) {
    reserve(n);
    for (std::size_t i = size_; i < n; ++i) data()[i] = fill;
    size_ = n;
  }
  void insert(std::size_t pos, std::int64_t v) {
    push_back(0);
    std::copy_backward(begin() + pos, end() - 1, end());
    data()[pos] = v;
  }
  void erase(std::size_t pos) {
    std::copy(begin() + pos + 1, end(), begin() + pos);
    --size_;
  }

  std::int64_t numel() const {
    std::int64_t n = 1;
    for (auto d : *this) n *= d;
    return n;
  }
  // Dimensions [from, to) as a new shape.
  Shape slice(std::size_t from, std::size_t to) const { return Shape(std::span(data() + from, to - from)); }
  Shape slice(std::size_t from) const { return slice(from, size_); }

  friend bool operator==(const Shape& a, const Shape& b) {
    return a.size_ == b.size_ && std::equal(a.begin(), a.end(), b.begin());
  }
  std::string str() const {
    std::string s = "[";
    for (std::size_t i = 0; i < size_; ++i) s += (i ? ", " : "") + std::to_string(data()[i]);
    return s + "]";
  }

 private:
  void reserve(std::size_t n) {
    if (n <= cap_) return;
    auto grown = std::make_unique<std::int64_t[]>(n);
    std::copy_n(data(), size_, grown.get());
    heap_ = std::move(grown);
    cap_ = n;
  }
  void assign(const std::int64_t* src, std::size_t n) {
    size_ = 0;
    reserve(n);
    std::copy_n(src, n, data());
    size_ = n;
  }
  std::int64_t inline_[kInline] = {};
  std::unique_ptr<std::int64_t[]> heap_;
  std::size_t size_ = 0, cap_ = kInline;
};

// Concatenation of two shapes.
inline Shape operator+(const Shape& a, const Shape& b) {
  Shape s = a;
  for (auto d : b) s.push_back(d);
  return s;
}

}  // namespace chainrule
