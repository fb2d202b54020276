#pragma once
// A profiler of primitives, in the spirit of torch.profiler: while a `Profile` is alive, every
// forward kernel that bind() runs at level 0 and every node's VJP rule that the reverse pass
// evaluates is recorded as an event (primitive, phase, thread, start, duration).
//
//   chainrule::profiler::Profile prof;
//   ... forward, backward ...
//   prof.stop();
//   std::cout << prof.table();
//   prof.export_chrome_trace("trace.json");  // opens in Perfetto or chrome://tracing
//
// CHAINRULE_PROFILE=<path.json> profiles a whole program: from start to exit, then the trace is
// written to the path and the table printed to stderr.
//
// Nesting: a VJP rule is written with ops, so the forward kernels it calls are events inside the
// VJP's event (the trace shows them all). The table folds a forward kernel run inside another
// primitive's event into that event's row: a "backward" row is the time of that primitive's VJP
// rules with the kernels they call, a "forward" row the time of its forward kernels (with any
// primitive a kernel is made of, as sum's reshape), so "calls" counts the program's own primitive
// calls. "total" is inclusive; "self" leaves out the nested events that keep rows of their own (the
// VJPs of a backward pass run inside a rule, as checkpoint's; RecordFunction regions and the
// primitives inside them), so the self times add up to the time inside events.
//
// Off, the cost is one relaxed load of a global counter and a branch per primitive call.
#include <atomic>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace chainrule::profiler {

// Forward: a forward kernel run by bind() at level 0. Backward: a node's VJP rule (or a leaf's
// gradient accumulation) in the reverse pass. User: a RecordFunction region (the optimiser step).
enum class Phase : std::uint8_t { Forward, Backward, User };
const char* phase_name(Phase p);  // "forward", "backward", "user"

struct Event {
  std::string name;  // the primitive's name, "accumulate_grad" (a leaf's gradient), or a RecordFunction's
  Phase phase;
  std::uint32_t thread;      // small number of the recording thread, in order of its first event
  std::int64_t start_ns;     // steady clock, since the process's first profile
  std::int64_t duration_ns;
};

// One row of the table: events of one primitive in one phase, averaged over `steps`.
struct Row {
  std::string name;
  Phase phase;
  double calls = 0;     // per step
  double total_ms = 0;  // inclusive, per step
  double self_ms = 0;   // without the nested events that have rows of their own, per step
};

class Profile {
 public:
  Profile();   // starts recording (profiles may nest: each sees the events of its own lifetime)
  ~Profile();  // stops, if still recording
  Profile(const Profile&) = delete;
  Profile& operator=(const Profile&) = delete;

  void stop();
  // The events, sorted by thread, then start (a parent before its children). Stops first.
  const std::vector<Event>& events();
  double wall_ms();  // from construction to stop()
  // Rows sorted by self time, largest first; every figure divided by `steps`.
  std::vector<Row> key_averages(int steps = 1);
  // The rows as text, with a last line giving the wall time (per step when steps > 1), the share
  // inside primitives and the share outside any (framework overhead).
  std::string table(int steps = 1);
  // Chrome's trace format ("traceEvents", complete "X" events, microseconds), written atomically.
  void export_chrome_trace(const std::string& path);

 private:
  std::int64_t start_ns_ = 0, stop_ns_ = -1;
  std::vector<Event> events_;
};

namespace detail {
extern std::atomic<int> g_active;  // live profiles
inline bool enabled() { return g_active.load(std::memory_order_relaxed) != 0; }
std::int64_t now_ns();
void record(std::string_view name, Phase phase, std::int64_t start_ns) noexcept;

// Records the enclosing block as one event when a profile is live.
class Scope {
 public:
  Scope(std::string_view name, Phase phase) {
    if (enabled()) [[unlikely]] {
      name_ = name;
      phase_ = phase;
      start_ns_ = now_ns();
    }
  }
  ~Scope() {
    if (start_ns_ >= 0) [[unlikely]] record(name_, phase_, start_ns_);
  }
  Scope(const Scope&) = delete;
  Scope& operator=(const Scope&) = delete;

 private:
  std::string_view name_;
  Phase phase_ = Phase::Forward;
  std::int64_t start_ns_ = -1;
};

// fn() recorded as one event.
template <class F>
decltype(auto) timed(std::string_view name, Phase phase, F&& fn) {
  Scope scope(name, phase);
  return fn();
}
}  // namespace detail

// A named region of the caller's own, as torch.profiler.record_function: one event of phase User
// when a profile is live. Primitives inside it keep their own rows.
class RecordFunction {
 public:
  explicit RecordFunction(std::string_view name) {
    if (detail::enabled()) [[unlikely]] {
      name_ = name;
      start_ns_ = detail::now_ns();
    }
  }
  ~RecordFunction() {
    if (start_ns_ >= 0) [[unlikely]] detail::record(name_, Phase::User, start_ns_);
  }
  RecordFunction(const RecordFunction&) = delete;
  RecordFunction& operator=(const RecordFunction&) = delete;

 private:
  std::string name_;  // owned: the caller's string may be a temporary
  std::int64_t start_ns_ = -1;
};

}  // namespace chainrule::profiler
