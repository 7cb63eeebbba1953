// dmashim-exporter: serves the stats segments of every process under the shim as Prometheus
// metrics (DESIGN §7). One collector scans the run directory at each scrape; no state to warm up.
//
//   dmashim-exporter [--listen ADDR:PORT] [--run-dir DIR] [--no-pid-label] [--once]
//
// /metrics is served by prometheus-cpp's Exposer, GET /metrics answered with the collector's own
// text (exporter/metrics_endpoint.h). --once prints one scrape's exposition text to stdout and
// exits (tests, promtool, cron); it deletes nothing, since reaping needs the memory of a previous
// scrape.
//
// Reaping assumes one scraper: with several Prometheus servers scraping one exporter, a dead
// process's last values reach only whichever scrapes first.
#include <signal.h>
#include <stdlib.h>
#include <unistd.h>

#include <cstdio>
#include <iostream>
#include <memory>
#include <string>

#include "exporter/collector.h"
#include "exporter/metric_sink.h"
#include "exporter/metrics_endpoint.h"
#include "prometheus/exposer.h"

namespace {

constexpr char kUsage[] =
    "usage: dmashim-exporter [--listen ADDR:PORT] [--run-dir DIR] [--no-pid-label] [--once]\n"
    "  --listen ADDR:PORT  where /metrics is served (default 127.0.0.1:9464)\n"
    "  --run-dir DIR       stats segments to export (default: $DMASHIM_RUN_DIR, else\n"
    "                      /run/dmashim for root, else $XDG_RUNTIME_DIR/dmashim)\n"
    "  --no-pid-label      drop the pid label (bounds cardinality; same-comm processes add up)\n"
    "  --once              print one scrape to stdout and exit (never reaps: dead processes'\n"
    "                      segments are only removed by a serving exporter, after their last scrape)\n";

// The same default the shim's writer uses (StatsSegment::Create), so both meet without set-up.
std::string DefaultRunDir() {
  if (const char* env = getenv("DMASHIM_RUN_DIR"); env != nullptr && env[0] != '\0') return env;
  if (geteuid() == 0) return "/run/dmashim";
  if (const char* xdg = getenv("XDG_RUNTIME_DIR"); xdg != nullptr && xdg[0] == '/')
    return std::string(xdg) + "/dmashim";
  return "";
}

}  // namespace

int main(int argc, char** argv) {
  std::string listen = "127.0.0.1:9464";
  bool once = false;
  dmashim::CollectorOptions options;
  options.run_dir = DefaultRunDir();
  options.reader_euid = geteuid();
  for (int i = 1; i < argc; ++i) {
    std::string arg = argv[i];
    auto value = [&](const char* flag) -> const char* {
      if (i + 1 >= argc) {
        std::cerr << "dmashim-exporter: " << flag << " needs a value\n" << kUsage;
        exit(2);
      }
      return argv[++i];
    };
    if (arg == "--listen") listen = value("--listen");
    else if (arg == "--run-dir") options.run_dir = value("--run-dir");
    else if (arg == "--no-pid-label") options.pid_label = false;
    else if (arg == "--once") once = true;
    else if (arg == "--help" || arg == "-h") {
      std::cout << kUsage;
      return 0;
    } else {
      std::cerr << "dmashim-exporter: unknown argument '" << arg << "'\n" << kUsage;
      return 2;
    }
  }
  if (options.run_dir.empty()) {
    std::cerr << "dmashim-exporter: no run directory: pass --run-dir, or set DMASHIM_RUN_DIR or "
                 "XDG_RUNTIME_DIR\n";
    return 2;
  }

  auto collector = std::make_shared<dmashim::SegmentCollector>(options);
  if (once) {
    dmashim::TextSink text;
    collector->ScrapeText(text);
    std::cout.write(text.text().data(), static_cast<std::streamsize>(text.text().size()));
    std::cout.flush();
    return std::cout.good() ? 0 : 1;
  }

  // Block the stop signals before the Exposer starts its threads, so they inherit the mask and
  // only sigwait below sees them.
  sigset_t stop;
  sigemptyset(&stop);
  sigaddset(&stop, SIGINT);
  sigaddset(&stop, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &stop, nullptr);
  // The endpoint outlives the Exposer (declared first, destroyed last): civetweb's threads call it.
  dmashim::MetricsEndpoint endpoint(collector);
  std::unique_ptr<prometheus::Exposer> exposer;
  try {
    exposer = std::make_unique<prometheus::Exposer>(listen, 2, endpoint.callbacks());
  } catch (const std::exception& e) {  // civetweb throws when it cannot bind
    std::cerr << "dmashim-exporter: cannot listen on " << listen << ": " << e.what() << "\n";
    return 1;
  }
  std::cerr << "dmashim-exporter: serving " << options.run_dir << " on http://" << listen
            << "/metrics\n";
  int sig = 0;
  sigwait(&stop, &sig);
  return 0;
}
