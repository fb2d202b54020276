#pragma once
// Learning-rate schedules as pure functions of the step (the index of the update about to be
// taken, from 0), so resuming a run needs no schedule state: lr(step) = base_lr · factor(step).
#include <cstdint>
#include <memory>
#include <string>

namespace chainrule::optim {

class LRSchedule {
 public:
  virtual ~LRSchedule() = default;
  virtual double factor(std::int64_t step) const = 0;
  virtual std::string str() const = 0;
};
using SchedulePtr = std::shared_ptr<const LRSchedule>;

class ConstantLR : public LRSchedule {
 public:
  double factor(std::int64_t) const override { return 1.0; }
  std::string str() const override { return "constant"; }
};

// γ^⌊step / step_size⌋ (torch.optim.lr_scheduler.StepLR).
class StepLR : public LRSchedule {
 public:
  StepLR(std::int64_t step_size, double gamma);
  double factor(std::int64_t step) const override;
  std::string str() const override;

 private:
  std::int64_t step_size_;
  double gamma_;
};

// min + (1 - min) (1 + cos(π step / total)) / 2, then min after `total` steps.
class CosineLR : public LRSchedule {
 public:
  explicit CosineLR(std::int64_t total_steps, double min_factor = 0.0);
  double factor(std::int64_t step) const override;
  std::string str() const override;

 private:
  std::int64_t total_;
  double min_;
};

// Linear warm-up: (step + 1) / warmup for the first `warmup` steps, then after(step - warmup).
class WarmupLR : public LRSchedule {
 public:
  WarmupLR(std::int64_t warmup_steps, SchedulePtr after);
  double factor(std::int64_t step) const override;
  std::string str() const override;

 private:
  std::int64_t warmup_;
  SchedulePtr after_;
};

}  // namespace chainrule::optim
