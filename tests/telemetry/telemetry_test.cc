// Telemetry end to end (issue 4, tests 1, 4, 5, 6): a scripted workload under the real shim on
// real huge pages, read back through the real dmashim-exporter, a real Prometheus server, and the
// dmashim command (stat --sites, ctl resize), plus the watchdog's line.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <map>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "gtest/gtest.h"
#include "tests/common/hugepages.h"
#include "tests/common/net.h"
#include "tests/shim/harness.h"

namespace dmashim::testing {
namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

std::map<std::string, std::string> Kv(const std::string& line) {
  std::map<std::string, std::string> kv;
  for (absl::string_view w : absl::StrSplit(line, ' ', absl::SkipEmpty())) {
    std::pair<std::string, std::string> p = absl::StrSplit(w, absl::MaxSplits('=', 1));
    kv[p.first] = p.second;
  }
  return kv;
}

// GET http://127.0.0.1:port/path; the body, or nullopt when nothing answers (2 s bound).
std::optional<std::string> HttpGet(int port, const std::string& path) {
  int s = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(static_cast<uint16_t>(port));
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (connect(s, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) {
    close(s);
    return std::nullopt;
  }
  const std::string req = absl::StrCat("GET ", path, " HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n");
  if (write(s, req.data(), req.size()) != static_cast<ssize_t>(req.size())) {
    close(s);
    return std::nullopt;
  }
  std::string resp;
  const auto deadline = Clock::now() + 2s;
  char buf[8192];
  while (Clock::now() < deadline) {
    pollfd p{s, POLLIN, 0};
    if (poll(&p, 1, 200) <= 0) continue;
    ssize_t n = read(s, buf, sizeof buf);
    if (n <= 0) break;
    resp.append(buf, static_cast<size_t>(n));
  }
  close(s);
  const size_t body = resp.find("\r\n\r\n");
  if (!absl::StartsWith(resp, "HTTP/1.") || !absl::StrContains(resp.substr(0, 16), " 200") ||
      body == std::string::npos)
    return std::nullopt;
  return resp.substr(body + 4);
}

std::string UrlEncode(const std::string& s) {
  std::string out;
  for (unsigned char c : s) {
    if (isalnum(c) || c == '_' || c == '.' || c == '-') out += static_cast<char>(c);
    else absl::StrAppend(&out, "%", absl::Hex(c, absl::kZeroPad2));
  }
  return out;
}

// The value of a PromQL query that returns one sample; nullopt while it returns none.
std::optional<double> PromQuery(int port, const std::string& q) {
  auto body = HttpGet(port, "/api/v1/query?query=" + UrlEncode(q));
  if (!body) return std::nullopt;
  const size_t v = body->find("\"value\":[");
  if (v == std::string::npos) return std::nullopt;
  const size_t q1 = body->find(",\"", v);
  const size_t q2 = q1 == std::string::npos ? q1 : body->find('"', q1 + 2);
  double d = 0;
  if (q2 == std::string::npos || !absl::SimpleAtod(body->substr(q1 + 2, q2 - q1 - 2), &d))
    return std::nullopt;
  return d;
}

// The sample of `name` whose labels include every `labels` pair (exposition text).
std::optional<double> Sample(const std::string& text, const std::string& name,
                             const std::vector<std::string>& labels) {
  for (absl::string_view line : absl::StrSplit(text, '\n')) {
    if (!absl::StartsWith(line, name + "{")) continue;
    bool all = true;
    for (const std::string& l : labels) all &= absl::StrContains(line, l);
    if (!all) continue;
    double d = 0;
    if (absl::SimpleAtod(line.substr(line.rfind(' ') + 1), &d)) return d;
  }
  return std::nullopt;
}

std::string PoolCfg(const std::string& name, const std::string& extra) {
  return absl::StrCat("[pool.", name, "]\n",
                      "match = { call = \"mmap\", hugetlb = true, size = \"2MiB\" }\n"
                      "zero = \"none\"\nretry_interval = \"10ms\"\nretry_max = \"50ms\"\n",
                      extra);
}

class Telemetry : public ::testing::Test {
 protected:
  void SetUp() override {
    DMASHIM_REQUIRE_FREE_HUGE_PAGES(8);
    run_dir_ = dir_.path() + "/run";
  }

  RunSpec Workload(const std::string& config_text) {
    RunSpec spec;
    spec.argv = {TELEMETRY_WORKLOAD_BIN};
    spec.preload = true;
    spec.config = dir_.Write("dmashim.toml", config_text);
    spec.run_dir = run_dir_;
    return spec;
  }

  std::map<std::string, std::string> Cmd(Child& c, const std::string& line) {
    c.WriteLine(line);
    std::string out = c.ReadLine();
    EXPECT_FALSE(out.empty()) << "no answer to " << line;
    return Kv(out);
  }

  RunResult Cli(std::vector<std::string> args, uid_t uid = 0) {
    RunSpec spec;
    spec.argv = {DMASHIM_CLI_BIN};
    spec.argv.insert(spec.argv.end(), args.begin(), args.end());
    spec.run_dir = run_dir_;
    spec.uid = uid;
    return RunProgram(spec);
  }

  std::string ExporterOnce() {
    RunSpec spec;
    spec.argv = {DMASHIM_EXPORTER_BIN, "--once", "--run-dir", run_dir_};
    return RunProgram(spec).out;
  }

  // A serving exporter on a free port; waits until /metrics answers.
  std::unique_ptr<Child> StartExporter(int* port) {
    *port = FreePort();
    RunSpec spec;
    spec.argv = {DMASHIM_EXPORTER_BIN, "--listen", absl::StrCat("127.0.0.1:", *port), "--run-dir",
                 run_dir_};
    auto c = std::make_unique<Child>(spec);
    for (auto deadline = Clock::now() + 10s; Clock::now() < deadline; std::this_thread::sleep_for(20ms)) {
      if (HttpGet(*port, "/metrics")) return c;
    }
    ADD_FAILURE() << "exporter did not answer on port " << *port;
    return c;
  }

  TempDir dir_;
  std::string run_dir_;
};

// Test 1: what a real Prometheus stores is exactly what the workload saw, by result and reason.
TEST_F(Telemetry, PrometheusQueriesMatchWhatTheWorkloadObserved) {
  if (access("/usr/bin/prometheus", X_OK) != 0) GTEST_SKIP() << "apt-get install prometheus";
  int exporter_port = 0;
  mkdir(run_dir_.c_str(), 0700);
  auto exporter = StartExporter(&exporter_port);
  const int prom_port = FreePort();
  const std::string prom_cfg = dir_.Write(
      "prometheus.yml",
      absl::StrCat("global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
                   "scrape_configs:\n  - job_name: dmashim\n    scrape_interval: 1s\n"
                   "    scrape_timeout: 1s\n    static_configs: [{targets: ['127.0.0.1:",
                   exporter_port, "']}]\n"));
  RunSpec prom;
  prom.argv = {"/usr/bin/prometheus", "--config.file=" + prom_cfg,
               "--storage.tsdb.path=" + dir_.path() + "/tsdb",
               absl::StrCat("--web.listen-address=127.0.0.1:", prom_port), "--log.level=warn"};
  Child prometheus(prom);  // starts its ~6 s discovery delay while the workload runs

  Child w(Workload(PoolCfg("rx", "reserve = 2\nmode = \"block\"\n")));
  const std::string pid = Cmd(w, "pid")["pid"];
  EXPECT_EQ(Cmd(w, "map 2")["mapped"], "2");  // the reserve
  {
    HugePageHog hog;  // every free huge page on the node: the source fails from now on
    ASSERT_TRUE(hog.ok()) << hog.error();
    // The node is shared: pages another process frees meanwhile may serve a call. What counts
    // is that Prometheus agrees with what the workload saw, so the steps only need to happen.
    EXPECT_NE(Cmd(w, "nowait 3")["nowait_failed"], "0");
    EXPECT_NE(Cmd(w, "timeout 2 100")["timeout_failed"], "0");
    EXPECT_EQ(Cmd(w, "wait_free 300")["waited_ok"], "1");  // woken by its own free
  }
  EXPECT_EQ(Cmd(w, "map 1")["mapped"], "1");  // pages are back: from the source
  auto t = Cmd(w, "totals");
  const double allocated = std::stod(t["allocated"]);
  const double waits = std::stod(t["timeout_failed"]) + std::stod(t["waited"]);

  const std::string sel = absl::StrCat("pool=\"rx\",pid=\"", pid, "\"");
  const std::vector<std::pair<std::string, double>> want = {
      {absl::StrCat("sum(dmashim_allocations_total{", sel, "})"), allocated},
      {absl::StrCat("dmashim_allocations_total{", sel, ",result=\"waited\"}"), std::stod(t["waited"])},
      {absl::StrCat("dmashim_failures_total{", sel, ",reason=\"fail_fast\"}"), std::stod(t["nowait_failed"])},
      {absl::StrCat("dmashim_failures_total{", sel, ",reason=\"timeout\"}"), std::stod(t["timeout_failed"])},
      {absl::StrCat("dmashim_failures_total{", sel, ",reason=\"interrupted\"}"), 0},
      {absl::StrCat("dmashim_failures_total{", sel, ",reason=\"source\"}"), 0},
      {absl::StrCat("dmashim_wait_seconds_count{", sel, "}"), waits},
      {absl::StrCat("dmashim_reserve_target_elements{", sel, "}"), 2},
  };
  // Poll (Prometheus takes ~6 s to its first scrape), never a fixed sleep.
  std::map<std::string, std::optional<double>> got;
  for (auto deadline = Clock::now() + 30s; Clock::now() < deadline; std::this_thread::sleep_for(200ms)) {
    bool all = true;
    for (const auto& [q, v] : want) {
      got[q] = PromQuery(prom_port, q);
      all &= got[q].has_value() && *got[q] == v;
    }
    if (all) break;
  }
  for (const auto& [q, v] : want) {
    ASSERT_TRUE(got[q].has_value()) << q << " returned nothing";
    EXPECT_EQ(*got[q], v) << q;
  }
  EXPECT_EQ(w.Wait().exit_code, 0);
}

// Test 4: a killed and restarted exporter never shows a counter going back; an application killed
// with SIGKILL is exported once more (alive = 0, last values), then reaped.
TEST_F(Telemetry, CountersStayMonotonicAcrossExporterRestartAndCrashedAppIsExportedOnce) {
  Child w(Workload(PoolCfg("rx", "reserve = 1\nmode = \"fail-fast\"\n")));
  const std::string pid = Cmd(w, "pid")["pid"];
  EXPECT_EQ(Cmd(w, "map 2")["mapped"], "2");
  const std::vector<std::string> rx = {"pool=\"rx\"", absl::StrCat("pid=\"", pid, "\"")};

  int port = 0;
  auto first = StartExporter(&port);
  auto before = HttpGet(port, "/metrics");
  ASSERT_TRUE(before.has_value());
  kill(first->pid(), SIGKILL);
  first->Wait();

  EXPECT_EQ(Cmd(w, "map 1")["mapped"], "1");
  auto second = StartExporter(&port);
  auto after = HttpGet(port, "/metrics");
  ASSERT_TRUE(after.has_value());
  // Every counter series of the first exporter is there again, not smaller.
  int compared = 0;
  for (absl::string_view line : absl::StrSplit(*before, '\n')) {
    if (!absl::StartsWith(line, "dmashim_") || !absl::StrContains(line, "_total{") ||
        !absl::StrContains(line, absl::StrCat("pid=\"", pid, "\"")))
      continue;
    const std::string series(line.substr(0, line.rfind(' ')));
    double b = 0, a = -1;
    ASSERT_TRUE(absl::SimpleAtod(line.substr(line.rfind(' ') + 1), &b));
    for (absl::string_view l2 : absl::StrSplit(*after, '\n'))
      if (absl::StartsWith(l2, series + " ")) {
        ASSERT_TRUE(absl::SimpleAtod(l2.substr(series.size() + 1), &a));
      }
    EXPECT_GE(a, b) << series;
    ++compared;
  }
  EXPECT_GT(compared, 10);
  auto sum_allocs = [&](const std::string& text) {
    double s = 0;
    for (const char* r : {"source", "reserve", "waited"}) {
      auto v = Sample(text, "dmashim_allocations_total", {rx[0], rx[1], absl::StrCat("result=\"", r, "\"")});
      s += v.value_or(-1000);
    }
    return s;
  };
  EXPECT_EQ(sum_allocs(*before), 2);
  EXPECT_EQ(sum_allocs(*after), 3);

  kill(w.pid(), SIGKILL);
  EXPECT_EQ(w.Wait().exit_code, 128 + SIGKILL);
  auto last = HttpGet(port, "/metrics");
  ASSERT_TRUE(last.has_value());
  EXPECT_EQ(Sample(*last, "dmashim_process_alive", {rx[1]}), 0.0);
  EXPECT_EQ(sum_allocs(*last), 3);  // the crashed process's last values
  auto gone = HttpGet(port, "/metrics");
  ASSERT_TRUE(gone.has_value());
  EXPECT_FALSE(Sample(*gone, "dmashim_process_alive", {rx[1]}).has_value()) << "not reaped";
  EXPECT_TRUE(Segments(run_dir_).empty());
}

// Test 5 and the watchdog: a wait longer than watchdog = "1s" prints one line naming the pool and
// the function that blocked; `dmashim stat --sites` names the same function.
TEST_F(Telemetry, StatSitesAndWatchdogNameTheFunctionThatBlocked) {
  Child w(Workload(PoolCfg("block", "reserve = 1\nmode = \"block\"\nprefault = \"startup\"\n"
                                    "watchdog = \"1s\"\n")));
  const std::string pid = Cmd(w, "pid")["pid"];
  EXPECT_EQ(Cmd(w, "map 1")["mapped"], "1");  // takes the reserve
  auto hog = std::make_unique<HugePageHog>();
  ASSERT_TRUE(hog->ok()) << hog->error();
  std::thread release([&] {
    std::this_thread::sleep_for(1500ms);
    hog->Release();
  });
  auto r = Cmd(w, "block_call");
  release.join();
  EXPECT_EQ(r["blocked_ok"], "1");
  EXPECT_GE(std::stoi(r["ms"]), 1000);

  RunResult sites = Cli({"stat", "--sites"});
  EXPECT_EQ(sites.exit_code, 0) << sites.err;
  EXPECT_TRUE(absl::StrContains(sites.out, "telemetry_blocking_call+0x")) << sites.out;
  EXPECT_TRUE(absl::StrContains(sites.out, "telemetry_workload")) << sites.out;
  RunResult json = Cli({"stat", "--sites", "--advise", "--json"});
  EXPECT_TRUE(absl::StrContains(json.out, "\"function\":\"telemetry_blocking_call\"")) << json.out;
  EXPECT_TRUE(absl::StrContains(json.out, "\"suggested_reserve\":3")) << json.out;  // peak 2
  RunResult advise = Cli({"stat", "--advise"});
  EXPECT_TRUE(absl::StrContains(advise.out, "pool block: high-water 2, reserve 1")) << advise.out;

  RunResult done = w.Wait();
  std::vector<std::string> dog;
  for (absl::string_view l : absl::StrSplit(done.err, '\n'))
    if (absl::StrContains(l, "watchdog")) dog.emplace_back(l);
  ASSERT_EQ(dog.size(), 1u) << done.err;
  EXPECT_TRUE(absl::StrContains(dog[0], "pool block")) << dog[0];
  EXPECT_TRUE(absl::StrContains(dog[0], "has waited 1.")) << dog[0];
  EXPECT_TRUE(absl::StrContains(dog[0], "telemetry_blocking_call")) << dog[0];
  EXPECT_TRUE(absl::StrContains(dog[0], "telemetry_workload")) << dog[0];

  // The process is gone: its maps with it. Addresses are printed raw, nothing is made up.
  RunResult dead = Cli({"stat", "--sites"});
  EXPECT_TRUE(absl::StrContains(dead.out, "  0x")) << dead.out;
  EXPECT_FALSE(absl::StrContains(dead.out, "telemetry_blocking_call")) << dead.out;
}

// Test 6: `dmashim ctl resize` changes a live process's reserve (target and level in its metrics);
// a grow the node cannot satisfy says how far it got; someone else's process is refused.
TEST_F(Telemetry, CtlResizeChangesALiveReserve) {
  Child w(Workload(PoolCfg("rx", "reserve = 1\nmode = \"fail-fast\"\nprefault = \"startup\"\n")));
  const std::string pid = Cmd(w, "pid")["pid"];
  const std::vector<std::string> rx = {"pool=\"rx\"", absl::StrCat("pid=\"", pid, "\"")};
  std::string m = ExporterOnce();
  EXPECT_EQ(Sample(m, "dmashim_reserve_target_elements", rx), 1.0);
  EXPECT_EQ(Sample(m, "dmashim_reserve_elements", rx), 1.0);

  RunResult r = Cli({"ctl", pid, "resize", "rx", "3"});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_TRUE(absl::StrContains(r.out, "reserve is now 3")) << r.out;
  m = ExporterOnce();
  EXPECT_EQ(Sample(m, "dmashim_reserve_target_elements", rx), 3.0);
  EXPECT_EQ(Sample(m, "dmashim_reserve_elements", rx), 3.0);

  {
    HugePageHog hog;
    ASSERT_TRUE(hog.ok()) << hog.error();
    r = Cli({"ctl", pid, "resize", "rx", "6"});
    EXPECT_EQ(r.exit_code, 1);
    EXPECT_TRUE(absl::StrContains(r.err, "partial grow: the pool holds 3 of the 6")) << r.err;
    m = ExporterOnce();
    EXPECT_EQ(Sample(m, "dmashim_reserve_target_elements", rx), 6.0);
    EXPECT_EQ(Sample(m, "dmashim_reserve_elements", rx), 3.0);
  }
  r = Cli({"ctl", pid, "resize", "nosuch", "1"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_TRUE(absl::StrContains(r.err, "no pool nosuch")) << r.err;

  // Another user may list the run directory here, but not steer a process that is not theirs.
  chmod(run_dir_.c_str(), 0755);
  r = Cli({"ctl", pid, "resize", "rx", "0"}, /*uid=*/65534);
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_TRUE(absl::StrContains(r.err, "permission denied")) << r.err;
  EXPECT_EQ(Sample(ExporterOnce(), "dmashim_reserve_target_elements", rx), 6.0);
  EXPECT_EQ(w.Wait().exit_code, 0);
}

}  // namespace
}  // namespace dmashim::testing
