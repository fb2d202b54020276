#pragma once
// SmallVec: up to N elements inline, more on the heap. Used for per-op input lists, where
// almost every primitive has one to three inputs and a heap allocation would dominate.
#include <array>
#include <cstddef>
#include <initializer_list>
#include <span>
#include <vector>

namespace chainrule {

template <class T, std::size_t N>
class SmallVec {
 public:
  SmallVec() = default;
  explicit SmallVec(std::size_t n) { resize(n); }
  SmallVec(std::initializer_list<T> xs) {
    for (const auto& x : xs) push_back(x);
  }
  SmallVec(std::span<const T> xs) {
    for (const auto& x : xs) push_back(x);
  }
  void push_back(T x) {
    if (!heap_.empty() || n_ == N) {
      if (heap_.empty()) heap_.assign(std::make_move_iterator(inline_.begin()), std::make_move_iterator(inline_.begin() + n_));
      heap_.push_back(std::move(x));
    } else {
      inline_[n_] = std::move(x);
    }
    ++n_;
  }
  void resize(std::size_t n) {
    while (n_ < n) push_back(T{});
    if (n < n_) {
      if (!heap_.empty()) heap_.resize(n);
      else for (std::size_t i = n; i < n_; ++i) inline_[i] = T{};
      n_ = n;
    }
  }
  std::size_t size() const { return n_; }
  bool empty() const { return n_ == 0; }
  T* data() { return heap_.empty() ? inline_.data() : heap_.data(); }
  const T* data() const { return heap_.empty() ? inline_.data() : heap_.data(); }
  T& operator[](std::size_t i) { return data()[i]; }
  const T& operator[](std::size_t i) const { return data()[i]; }
  T* begin() { return data(); }
  T* end() { return data() + n_; }
  const T* begin() const { return data(); }
  const T* end() const { return data() + n_; }
  operator std::span<const T>() const { return {data(), n_}; }
  operator std::span<T>() { return {data(), n_}; }
  void clear() { resize(0); heap_.clear(); }

 private:
  std::array<T, N> inline_{};
  std::vector<T> heap_;
  std::size_t n_ = 0;
};

}  // namespace chainrule
