// GET /metrics, answered with the collector's exposition text on prometheus-cpp's Exposer.
//
// The Exposer stays the HTTP server (it binds, runs civetweb's threads, answers everything else
// with 404), but its own /metrics handler can only serialize prometheus::MetricFamily objects:
// half a second for 1,000 processes × 8 pools. civetweb lets a `begin_request` callback answer a
// request itself, and the Exposer's constructor takes civetweb callbacks, so GET /metrics is
// answered there with the TextSink's text (DESIGN §8 figure 7). Every other method and path goes on
// to the Exposer as before.
//
// The response carries the endpoint's own metrics first (exposer_transferred_bytes_total,
// exposer_scrapes_total, exposer_request_latencies: what the Exposer's handler served before),
// built with prometheus-cpp and serialized with its TextSerializer, then the collector's text.
// Uncompressed, whatever Accept-Encoding says: gzip would cost more than the scrape itself.
//
// civetweb's callback gets no pointer of ours (the context's user data is the Exposer's), so at
// most one endpoint may exist at a time. Create it before the Exposer, destroy it after.
#pragma once

#include <chrono>
#include <memory>
#include <string>

#include "CivetServer.h"  // CivetCallbacks, what the Exposer takes
#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "civetweb.h"
#include "exporter/collector.h"
#include "exporter/metric_sink.h"
#include "prometheus/counter.h"
#include "prometheus/registry.h"
#include "prometheus/summary.h"

namespace dmashim {

inline constexpr char kMetricsContentType[] = "text/plain; version=0.0.4; charset=utf-8";

class MetricsEndpoint {
 public:
  // Serves `collector` at `path`. Aborts if another endpoint exists.
  explicit MetricsEndpoint(std::shared_ptr<const SegmentCollector> collector,
                           std::string path = "/metrics");
  ~MetricsEndpoint();
  MetricsEndpoint(const MetricsEndpoint&) = delete;
  MetricsEndpoint& operator=(const MetricsEndpoint&) = delete;

  // For prometheus::Exposer's constructor.
  const CivetCallbacks* callbacks() const { return &callbacks_; }

 private:
  static int BeginRequest(mg_connection* conn);
  // Writes the whole response for GET `path_`; 0 for any other request (civetweb goes on).
  int Handle(mg_connection* conn);

  std::shared_ptr<const SegmentCollector> collector_;
  std::string path_;
  CivetCallbacks callbacks_;
  absl::Mutex mu_;  // one scrape at a time: the buffers are reused
  TextSink text_ ABSL_GUARDED_BY(mu_);
  std::string self_ ABSL_GUARDED_BY(mu_);
  prometheus::Registry registry_;
  prometheus::Counter& bytes_;
  prometheus::Counter& scrapes_;
  prometheus::Summary& latencies_;
};

}  // namespace dmashim
