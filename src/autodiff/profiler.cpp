// The profiler's event log, its table and its Chrome trace (include/chainrule/autodiff/profiler.h).
// Events go to one mutex-guarded log while any profile is live; each profile copies out the events
// of its own lifetime when it stops.
#include "chainrule/autodiff/profiler.h"

#include <fmt/format.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <iostream>
#include <map>
#include <memory>
#include <mutex>
#include <span>
#include <nlohmann/json.hpp>
#include <tuple>

#include "chainrule/io/atomic_file.h"

namespace chainrule::profiler {

namespace detail {
std::atomic<int> g_active{0};
}  // namespace detail

namespace {

std::mutex g_mutex;
std::vector<Event> g_log;  // guarded by g_mutex
std::atomic<std::uint32_t> g_threads{0};

std::uint32_t thread_number() {
  thread_local const std::uint32_t id = g_threads.fetch_add(1);
  return id;
}

std::int64_t end_ns(const Event& e) { return e.start_ns + e.duration_ns; }

// Sorted by thread, then start, the longer (enclosing) event first on a tie.
void sort_events(std::vector<Event>& v) {
  std::sort(v.begin(), v.end(), [](const Event& a, const Event& b) {
    return std::tuple(a.thread, a.start_ns, -a.duration_ns) < std::tuple(b.thread, b.start_ns, -b.duration_ns);
  });
}

}  // namespace

const char* phase_name(Phase p) {
  switch (p) {
    case Phase::Forward: return "forward";
    case Phase::Backward: return "backward";
    case Phase::User: return "user";
  }
  return "?";
}

std::int64_t detail::now_ns() {
  static const auto origin = std::chrono::steady_clock::now();
  return std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now() - origin).count();
}

void detail::record(std::string_view name, Phase phase, std::int64_t start_ns) noexcept {
  const std::int64_t end = now_ns();
  try {
    std::lock_guard lock(g_mutex);
    if (!enabled()) return;  // the last profile stopped while this event ran
    g_log.push_back(Event{std::string(name), phase, thread_number(), start_ns, end - start_ns});
  } catch (...) {  // out of memory: lose the event rather than the program
  }
}

Profile::Profile() {
  std::lock_guard lock(g_mutex);
  start_ns_ = detail::now_ns();
  detail::g_active.fetch_add(1);
}

Profile::~Profile() { stop(); }

void Profile::stop() {
  if (stop_ns_ >= 0) return;
  std::lock_guard lock(g_mutex);
  stop_ns_ = detail::now_ns();
  for (const auto& e : g_log)
    if (e.start_ns >= start_ns_ && end_ns(e) <= stop_ns_) events_.push_back(e);
  if (detail::g_active.fetch_sub(1) == 1) g_log.clear();
  sort_events(events_);
}

const std::vector<Event>& Profile::events() {
  stop();
  return events_;
}

double Profile::wall_ms() {
  stop();
  return 1e-6 * static_cast<double>(stop_ns_ - start_ns_);
}

std::vector<Row> Profile::key_averages(int steps) {
  stop();
  // Walk each thread's events in order with a stack of the enclosing ones. A forward kernel inside
  // another primitive's event (a VJP rule's ops, or a kernel made of primitives) is folded into
  // that row; every other event has a row of its own, and its duration leaves the self time of the
  // nearest enclosing event that has one.
  struct Open {
    std::int64_t end;
    bool in_primitive;
    std::int64_t owner;  // index of the nearest enclosing event with a row, or -1
  };
  std::map<std::pair<std::string, Phase>, Row> rows;
  std::vector<Row*> row_of(events_.size(), nullptr);
  std::vector<Open> stack;
  for (std::size_t i = 0; i < events_.size(); ++i) {
    const Event& e = events_[i];
    if (i > 0 && e.thread != events_[i - 1].thread) stack.clear();
    while (!stack.empty() && stack.back().end < end_ns(e)) stack.pop_back();
    const bool in_primitive = !stack.empty() && stack.back().in_primitive;
    const std::int64_t owner = stack.empty() ? -1 : stack.back().owner;
    const bool own_row = !(e.phase == Phase::Forward && in_primitive);
    if (own_row) {
      Row& r = rows[{e.name, e.phase}];
      r.name = e.name, r.phase = e.phase;
      r.calls += 1;
      r.total_ms += 1e-6 * static_cast<double>(e.duration_ns);
      r.self_ms += 1e-6 * static_cast<double>(e.duration_ns);
      if (owner >= 0) row_of[static_cast<std::size_t>(owner)]->self_ms -= 1e-6 * static_cast<double>(e.duration_ns);
      row_of[i] = &r;
    }
    stack.push_back({end_ns(e), in_primitive || e.phase != Phase::User, own_row ? static_cast<std::int64_t>(i) : owner});
  }
  std::vector<Row> out;
  const double n = std::max(steps, 1);
  for (auto& [key, r] : rows) out.push_back({r.name, r.phase, r.calls / n, r.total_ms / n, r.self_ms / n});
  std::sort(out.begin(), out.end(), [](const Row& a, const Row& b) {
    return std::tuple(-a.self_ms, a.name, a.phase) < std::tuple(-b.self_ms, b.name, b.phase);
  });
  return out;
}

std::string Profile::table(int steps) {
  const std::vector<Row> rows = key_averages(steps);
  const double wall = wall_ms() / std::max(steps, 1);
  const bool per_step = steps > 1;
  std::string s = fmt::format("{:<28} {:<8} {:>11} {:>12} {:>12} {:>7}\n", "primitive", "phase", per_step ? "calls/step" : "calls",
                              per_step ? "total ms/st" : "total ms", per_step ? "self ms/st" : "self ms", "share");
  double inside = 0, phase_ms[3] = {0, 0, 0};
  for (const auto& r : rows) {
    s += fmt::format("{:<28} {:<8} {:>11.4g} {:>12.4f} {:>12.4f} {:>6.1f}%\n", r.name, phase_name(r.phase), r.calls, r.total_ms,
                     r.self_ms, wall > 0 ? 100 * r.self_ms / wall : 0.0);
    inside += r.self_ms;
    phase_ms[static_cast<int>(r.phase)] += r.self_ms;
  }
  auto pct = [&](double ms) { return wall > 0 ? 100 * ms / wall : 0.0; };
  s += fmt::format("{} {:.4f} ms{}: {:.1f}% inside events (forward {:.1f}%, backward {:.1f}%, user regions {:.1f}%), "
                   "{:.1f}% outside any (framework overhead)\n",
                   per_step ? "step wall time" : "profiled wall time", wall, per_step ? fmt::format(" (mean of {} steps)", steps) : "",
                   pct(inside), pct(phase_ms[0]), pct(phase_ms[1]), pct(phase_ms[2]), pct(wall - inside));
  return s;
}

void Profile::export_chrome_trace(const std::string& path) {
  stop();
  const int pid = static_cast<int>(::getpid());
  nlohmann::json list = nlohmann::json::array();
  list.push_back({{"name", "process_name"}, {"ph", "M"}, {"pid", pid}, {"tid", 0}, {"args", {{"name", "chainrule"}}}});
  for (const auto& e : events_)
    list.push_back({{"name", e.name}, {"cat", phase_name(e.phase)}, {"ph", "X"}, {"ts", 1e-3 * static_cast<double>(e.start_ns)},
                    {"dur", 1e-3 * static_cast<double>(e.duration_ns)}, {"pid", pid}, {"tid", e.thread}});
  const std::string text = nlohmann::json{{"traceEvents", list}, {"displayTimeUnit", "ms"}}.dump();
  io::write_file_atomic(path, std::as_bytes(std::span(text.data(), text.size())));
}

namespace {

// CHAINRULE_PROFILE=<path.json>: a profile from static initialisation to exit.
struct EnvironmentProfile {
  std::string path;
  std::unique_ptr<Profile> profile;
  EnvironmentProfile() {
    const char* p = std::getenv("CHAINRULE_PROFILE");
    if (p && *p) path = p, profile = std::make_unique<Profile>();
  }
  ~EnvironmentProfile() {
    if (!profile) return;
    try {
      profile->stop();
      profile->export_chrome_trace(path);
      std::cerr << "CHAINRULE_PROFILE: " << profile->events().size() << " events written to " << path << "\n" << profile->table();
    } catch (const std::exception& e) {
      std::cerr << "CHAINRULE_PROFILE: " << e.what() << "\n";
    }
  }
};
EnvironmentProfile g_environment_profile;  // after g_mutex and g_log: destroyed before them

}  // namespace

}  // namespace chainrule::profiler
