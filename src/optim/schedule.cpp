#include "chainrule/optim/schedule.h"

#include <fmt/format.h>

#include <cmath>
#include <numbers>

#include "chainrule/errors.h"

namespace chainrule::optim {

StepLR::StepLR(std::int64_t step_size, double gamma) : step_size_(step_size), gamma_(gamma) {
  if (step_size <= 0) throw ValueError(fmt::format("StepLR: step_size must be positive, got {}", step_size));
}
double StepLR::factor(std::int64_t step) const { return std::pow(gamma_, static_cast<double>(step / step_size_)); }
std::string StepLR::str() const { return fmt::format("step(size={}, gamma={})", step_size_, gamma_); }

CosineLR::CosineLR(std::int64_t total, double min_factor) : total_(total), min_(min_factor) {
  if (total <= 0) throw ValueError(fmt::format("CosineLR: total_steps must be positive, got {}", total));
}
double CosineLR::factor(std::int64_t step) const {
  if (step >= total_) return min_;
  double c = (1 + std::cos(std::numbers::pi * static_cast<double>(step) / static_cast<double>(total_))) / 2;
  return min_ + (1 - min_) * c;
}
std::string CosineLR::str() const { return fmt::format("cosine(total={}, min={})", total_, min_); }

WarmupLR::WarmupLR(std::int64_t warmup, SchedulePtr after) : warmup_(warmup), after_(std::move(after)) {
  if (warmup < 0) throw ValueError(fmt::format("WarmupLR: warmup steps must be >= 0, got {}", warmup));
  if (!after_) after_ = std::make_shared<ConstantLR>();
}
double WarmupLR::factor(std::int64_t step) const {
  if (step < warmup_) return static_cast<double>(step + 1) / static_cast<double>(warmup_);
  return after_->factor(step - warmup_);
}
std::string WarmupLR::str() const { return fmt::format("warmup({}) then {}", warmup_, after_->str()); }

}  // namespace chainrule::optim
