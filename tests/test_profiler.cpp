// The profiler (chainrule/autodiff/profiler.h): its counts against the known primitive calls of a
// small program, the nesting of its events, its Chrome trace and CHAINRULE_PROFILE.
#include <fmt/format.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <tuple>

#include "chainrule/autodiff/profiler.h"
#include "chainrule/chainrule.h"

using namespace chainrule;
namespace prof = chainrule::profiler;

namespace {

// relu(x @ w + b), summed, and its gradient: four primitives forward (matmul, add, relu, sum),
// the VJP of each in the backward pass, and the gradients of the three leaves accumulated.
void small_program() {
  Generator gen(3);
  Tensor x = randn({8, 5}, gen).requires_grad_(), w = randn({5, 4}, gen).requires_grad_(), b = randn({4}, gen).requires_grad_();
  sum(relu(matmul(x, w) + b)).backward();
}

std::map<std::pair<std::string, std::string>, double> calls_by_row(prof::Profile& p, int steps = 1) {
  std::map<std::pair<std::string, std::string>, double> out;
  for (const auto& r : p.key_averages(steps)) out[{r.name, prof::phase_name(r.phase)}] = r.calls;
  return out;
}

const std::map<std::pair<std::string, std::string>, double> kSmallProgramCalls = {
    {{"matmul", "forward"}, 1},  {{"add", "forward"}, 1},  {{"relu", "forward"}, 1},  {{"sum", "forward"}, 1},
    {{"matmul", "backward"}, 1}, {{"add", "backward"}, 1}, {{"relu", "backward"}, 1}, {{"sum", "backward"}, 1},
    {{"accumulate_grad", "backward"}, 3},
};

std::string temp_path(const std::string& name) {
  return (std::filesystem::temp_directory_path() / fmt::format("chainrule_profiler_{}_{}", ::getpid(), name)).string();
}

// Events of one thread, in order, either disjoint or nested; each inside the profile's wall time.
void expect_properly_nested(const std::vector<std::tuple<std::uint64_t, double, double>>& events /* thread, start, end */,
                            double wall_end) {
  std::map<std::uint64_t, std::vector<double>> open_ends;  // per thread: the ends of the enclosing events
  std::map<std::uint64_t, double> last_start;
  for (const auto& [thread, start, end] : events) {
    EXPECT_GE(start, 0);
    EXPECT_LE(start, end);
    EXPECT_LE(end, wall_end);
    if (last_start.count(thread)) {
      EXPECT_GE(start, last_start[thread]) << "events out of order";
    }
    last_start[thread] = start;
    auto& ends = open_ends[thread];
    while (!ends.empty() && ends.back() <= start) ends.pop_back();
    if (!ends.empty()) {
      EXPECT_LE(end, ends.back()) << "an event overlaps its parent's end";
    }
    ends.push_back(end);
  }
}

}  // namespace

TEST(Profiler, CountsTheCallsOfASmallProgram) {
  small_program();  // warm-up, not recorded
  prof::Profile p;
  small_program();
  small_program();
  p.stop();
  EXPECT_EQ(calls_by_row(p, 2), kSmallProgramCalls);
  // Every event is a row's or a forward kernel inside a VJP rule (matmul's VJP runs matmuls).
  int forward_events = 0;
  for (const auto& e : p.events()) forward_events += e.phase == prof::Phase::Forward;
  EXPECT_GT(forward_events, 2 * 4);
}

TEST(Profiler, EventsNestInsideTheirParentsAndSelfTimesAddUp) {
  small_program();
  prof::Profile p;
  for (int i = 0; i < 3; ++i) small_program();
  p.stop();
  std::vector<std::tuple<std::uint64_t, double, double>> spans;
  for (const auto& e : p.events()) {
    EXPECT_GE(e.duration_ns, 0) << e.name;
    spans.emplace_back(e.thread, static_cast<double>(e.start_ns), static_cast<double>(e.start_ns + e.duration_ns));
  }
  expect_properly_nested(spans, 1e30);
  // matmul's VJP calls matmul kernels: forward events inside a backward one.
  bool nested = false;
  const auto& ev = p.events();
  for (std::size_t i = 0; i + 1 < ev.size(); ++i)
    if (ev[i].phase == prof::Phase::Backward && ev[i].name == "matmul" && ev[i + 1].phase == prof::Phase::Forward &&
        ev[i + 1].start_ns + ev[i + 1].duration_ns <= ev[i].start_ns + ev[i].duration_ns)
      nested = true;
  EXPECT_TRUE(nested);
  double self = 0;
  for (const auto& r : p.key_averages()) {
    EXPECT_GE(r.self_ms, 0) << r.name;
    EXPECT_LE(r.self_ms, r.total_ms + 1e-9) << r.name;
    self += r.self_ms;
  }
  EXPECT_LE(self, p.wall_ms());
  const std::string table = p.table();
  EXPECT_NE(table.find("matmul"), std::string::npos);
  EXPECT_NE(table.find("outside any (framework overhead)"), std::string::npos);
}

TEST(Profiler, OffRecordsNothing) {
  EXPECT_FALSE(prof::detail::enabled());
  prof::Profile p;
  EXPECT_TRUE(prof::detail::enabled());
  p.stop();
  EXPECT_FALSE(prof::detail::enabled());
  small_program();
  EXPECT_TRUE(p.events().empty());
  prof::Profile later;  // nor does a later profile see events from before it
  EXPECT_TRUE(later.events().empty());
}

TEST(Profiler, NestedProfilesSeeTheirOwnLifetimes) {
  prof::Profile outer;
  small_program();
  {
    prof::Profile inner;
    small_program();
    EXPECT_EQ(calls_by_row(inner), kSmallProgramCalls);
  }
  small_program();
  EXPECT_EQ(calls_by_row(outer, 3), kSmallProgramCalls);
}

TEST(Profiler, RecordFunctionIsAUserRowAroundPrimitives) {
  prof::Profile p;
  {
    prof::RecordFunction region(std::string("my_region"));  // a temporary name: the region keeps a copy
    small_program();
  }
  auto calls = calls_by_row(p);
  EXPECT_EQ((calls[{"my_region", "user"}]), 1);
  EXPECT_EQ((calls[{"matmul", "forward"}]), 1);  // primitives inside keep their rows
}

TEST(Profiler, ChromeTraceIsValidJsonOfNestedCompleteEvents) {
  prof::Profile p;
  small_program();
  p.stop();
  const std::string path = temp_path("trace.json");
  p.export_chrome_trace(path);
  std::ifstream in(path);
  const nlohmann::json j = nlohmann::json::parse(in);
  std::filesystem::remove(path);
  ASSERT_TRUE(j.contains("traceEvents"));
  ASSERT_TRUE(j["traceEvents"].is_array());
  std::vector<std::tuple<std::uint64_t, double, double>> spans;
  std::map<std::pair<std::string, std::string>, double> counts;
  for (const auto& e : j["traceEvents"]) {
    if (e["ph"] != "X") continue;
    for (const char* key : {"name", "cat", "ts", "dur", "pid", "tid"}) ASSERT_TRUE(e.contains(key)) << key;
    EXPECT_EQ(e["pid"], ::getpid());
    const std::string cat = e["cat"];
    EXPECT_TRUE(cat == "forward" || cat == "backward") << cat;
    const double ts = e["ts"], dur = e["dur"];
    spans.emplace_back(e["tid"].get<std::uint64_t>(), ts, ts + dur);
    counts[{e["name"], cat}] += 1;
  }
  EXPECT_EQ(spans.size(), p.events().size());
  expect_properly_nested(spans, 1e30);
  EXPECT_EQ((counts[{"relu", "backward"}]), 1);
  EXPECT_EQ((counts[{"accumulate_grad", "backward"}]), 3);
}

// Run by the test below in a child process with CHAINRULE_PROFILE set; skipped otherwise.
TEST(ProfilerEnvironmentChild, SmallProgram) {
  if (!std::getenv("CHAINRULE_PROFILE")) GTEST_SKIP() << "runs as the child of Profiler.EnvironmentVariableWritesATrace";
  small_program();
}

TEST(Profiler, EnvironmentVariableWritesATrace) {
  const std::string path = temp_path("env.json"), err = temp_path("env.stderr");
  const std::string exe = std::filesystem::read_symlink("/proc/self/exe").string();
  const std::string cmd = fmt::format("CHAINRULE_PROFILE='{}' '{}' --gtest_filter=ProfilerEnvironmentChild.SmallProgram >/dev/null 2>'{}'",
                                      path, exe, err);
  ASSERT_EQ(std::system(cmd.c_str()), 0) << cmd;
  std::ifstream in(path);
  ASSERT_TRUE(in) << "no trace at " << path;
  const nlohmann::json j = nlohmann::json::parse(in);
  std::map<std::pair<std::string, std::string>, double> counts, expected;
  for (const auto& e : j["traceEvents"])
    if (e["ph"] == "X") counts[{e["name"], e["cat"]}] += 1;
  prof::Profile here;  // the same program in this process gives the same events
  small_program();
  for (const auto& e : here.events()) expected[{e.name, prof::phase_name(e.phase)}] += 1;
  EXPECT_EQ(counts, expected);
  EXPECT_EQ((counts[{"relu", "backward"}]), 1);
  std::ifstream table(err);
  const std::string text((std::istreambuf_iterator<char>(table)), std::istreambuf_iterator<char>());
  EXPECT_NE(text.find("profiled wall time"), std::string::npos) << text;
  EXPECT_NE(text.find("relu"), std::string::npos) << text;
  std::filesystem::remove(path);
  std::filesystem::remove(err);
}
