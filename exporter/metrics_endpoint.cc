#include "exporter/metrics_endpoint.h"

#include <atomic>
#include <cstdlib>
#include <cstring>
#include <iostream>

#include "prometheus/text_serializer.h"

namespace dmashim {
namespace {

std::atomic<MetricsEndpoint*> g_endpoint{nullptr};

}  // namespace

MetricsEndpoint::MetricsEndpoint(std::shared_ptr<const SegmentCollector> collector,
                                 std::string path)
    : collector_(std::move(collector)),
      path_(std::move(path)),
      bytes_(prometheus::BuildCounter()
                 .Name("exposer_transferred_bytes_total")
                 .Help("Transferred bytes to metrics services")
                 .Register(registry_)
                 .Add({})),
      scrapes_(prometheus::BuildCounter()
                   .Name("exposer_scrapes_total")
                   .Help("Number of times metrics were scraped")
                   .Register(registry_)
                   .Add({})),
      latencies_(
          prometheus::BuildSummary()
              .Name("exposer_request_latencies")
              .Help("Latencies of serving scrape requests, in microseconds")
              .Register(registry_)
              .Add({}, prometheus::Summary::Quantiles{{0.5, 0.05}, {0.9, 0.01}, {0.99, 0.001}})) {
  MetricsEndpoint* none = nullptr;
  if (!g_endpoint.compare_exchange_strong(none, this)) {
    std::cerr << "dmashim: a second MetricsEndpoint\n";
    abort();
  }
  callbacks_.begin_request = &MetricsEndpoint::BeginRequest;
}

MetricsEndpoint::~MetricsEndpoint() { g_endpoint.store(nullptr); }

int MetricsEndpoint::BeginRequest(mg_connection* conn) {
  MetricsEndpoint* endpoint = g_endpoint.load();
  return endpoint != nullptr ? endpoint->Handle(conn) : 0;
}

int MetricsEndpoint::Handle(mg_connection* conn) {
  const mg_request_info* req = mg_get_request_info(conn);
  if (req == nullptr || req->request_method == nullptr || req->local_uri == nullptr ||
      strcmp(req->request_method, "GET") != 0 || path_ != req->local_uri)
    return 0;
  const auto started = std::chrono::steady_clock::now();
  absl::MutexLock lock(&mu_);
  self_ = prometheus::TextSerializer().Serialize(registry_.Collect());
  collector_->ScrapeText(text_);
  const size_t size = self_.size() + text_.text().size();
  mg_send_http_ok(conn, kMetricsContentType, static_cast<long long>(size));
  // A client that goes away mid-body is its own problem; civetweb closes the connection.
  if (mg_write(conn, self_.data(), self_.size()) > 0)
    mg_write(conn, text_.text().data(), text_.text().size());
  const auto took = std::chrono::steady_clock::now() - started;
  latencies_.Observe(
      static_cast<double>(std::chrono::duration_cast<std::chrono::microseconds>(took).count()));
  bytes_.Increment(static_cast<double>(size));
  scrapes_.Increment();
  return 1;
}

}  // namespace dmashim
