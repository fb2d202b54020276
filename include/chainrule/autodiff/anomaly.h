#pragma once
// Anomaly mode: every primitive's output, forward and backward, is checked for NaN and Inf, and
// the first bad value is reported with the primitive, its input shapes, the module path (from
// NameScope) and, in the backward pass, where the offending node was created.
#include <string>

#include "chainrule/errors.h"

namespace chainrule {

struct NumericalError : Error {
  using Error::Error;
};

struct AnomalyMode {
  static bool is_enabled();
  static void set_enabled(bool on);
};

class DetectAnomalyGuard {
 public:
  DetectAnomalyGuard() : prev_(AnomalyMode::is_enabled()) { AnomalyMode::set_enabled(true); }
  ~DetectAnomalyGuard() { AnomalyMode::set_enabled(prev_); }
  DetectAnomalyGuard(const DetectAnomalyGuard&) = delete;
  DetectAnomalyGuard& operator=(const DetectAnomalyGuard&) = delete;

 private:
  bool prev_;
};

// Names the part of a model being run (modules push their names, e.g. "2" then "l1"), so that
// anomaly reports say "in module 2.l1".
class NameScope {
 public:
  explicit NameScope(const std::string& name);
  ~NameScope();
  NameScope(const NameScope&) = delete;
  NameScope& operator=(const NameScope&) = delete;

 private:
  bool active_;  // names are kept only in anomaly mode, so the common path costs nothing
};
std::string current_name_scope();  // the pushed names joined with '.', or "" at top level

}  // namespace chainrule
