// Where a scrape's series go. The collector (exporter/collector.h) decides which series exist,
// their labels, values and merging, and hands them to a MetricSink, one family at a time; the sink
// only writes them down. Two sinks, so there is one producer and no second copy to drift:
//
//   TextSink    the exposition text itself, written straight into one buffer reused across
//               scrapes: what /metrics and --once serve (DESIGN §8 figure 7: a scrape of 1,000
//               processes × 8 pools in well under 50 ms);
//   FamilySink  prometheus-cpp MetricFamily objects, for anything that wants them (the
//               Collectable interface, tests). prometheus::TextSerializer of its families is the
//               TextSink's text byte for byte (tests/exporter/text_sink_test.cc holds it to that).
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "absl/strings/string_view.h"
#include "prometheus/metric_family.h"
#include "prometheus/metric_type.h"

namespace dmashim {

// One metric family: what its HELP and TYPE lines say. Histograms carry their upper bounds, the
// last one +Inf.
struct FamilyDesc {
  const char* name;
  const char* help;
  prometheus::MetricType type;
  std::span<const double> buckets = {};
};

// The labels every series of one process (or one pool) carries, kept in both forms the sinks need:
// the pairs, and their exposition text (`comm="x",pid="1"`, values escaped, no braces) made once
// and reused by every series of that process or pool.
class SeriesLabels {
 public:
  SeriesLabels& Add(absl::string_view name, absl::string_view value);

  const std::vector<prometheus::ClientMetric::Label>& pairs() const { return pairs_; }
  absl::string_view text() const { return text_; }

  // Ordered by their text: one comparison, and the pairs' order but for escaped characters.
  bool operator<(const SeriesLabels& o) const { return text_ < o.text_; }

 private:
  std::vector<prometheus::ClientMetric::Label> pairs_;
  std::string text_;
};

class MetricSink {
 public:
  virtual ~MetricSink() = default;

  // Starts the next family; every sample up to the next BeginFamily belongs to it. A family with
  // no sample leaves no trace (no HELP or TYPE line). Each family is begun at most once a scrape.
  virtual void BeginFamily(const FamilyDesc& family) = 0;

  // A counter or gauge sample: `labels`, then `extra_name="extra_value"` when extra_name is
  // non-empty.
  virtual void Sample(const SeriesLabels& labels, absl::string_view extra_name,
                      absl::string_view extra_value, double value) = 0;

  // A histogram sample: `cumulative[i]` observations ≤ family.buckets[i] (so the last is the
  // count), and their sum.
  virtual void Histogram(const SeriesLabels& labels, const uint64_t* cumulative, double sum) = 0;
};

// Writes the Prometheus text format (version 0.0.4) exactly as prometheus-cpp 1.0's TextSerializer
// does: values with "%.16g" (Nan, +Inf, -Inf spelled its way), label values escaped (\\ \" \n),
// HELP text as given. The buffer is kept between scrapes: Clear() it before the next.
class TextSink : public MetricSink {
 public:
  void Clear() { size_ = 0; }
  absl::string_view text() const { return absl::string_view(buf_.data(), size_); }

  void BeginFamily(const FamilyDesc& family) override;
  void Sample(const SeriesLabels& labels, absl::string_view extra_name,
              absl::string_view extra_value, double value) override;
  void Histogram(const SeriesLabels& labels, const uint64_t* cumulative, double sum) override;

 private:
  // Room for `n` more bytes; returns where they go. Commit(end) keeps what was written.
  char* Reserve(size_t n);
  void Commit(char* end) { size_ = static_cast<size_t>(end - buf_.data()); }
  void WriteHeaderOnce();
  // `name``suffix`{labels[,extra="value"]}␠ — the part of a line before its value.
  char* Head(char* p, absl::string_view suffix, const SeriesLabels& labels,
             absl::string_view extra_name, absl::string_view extra_value) const;

  std::string buf_;  // capacity grows to the largest scrape and stays
  size_t size_ = 0;
  const FamilyDesc* family_ = nullptr;
  absl::string_view name_;  // family_->name
  bool header_written_ = false;
  std::vector<std::string> le_tail_;  // the current histogram's bounds, as `0.005"} `
};

// Collects prometheus-cpp MetricFamily objects.
class FamilySink : public MetricSink {
 public:
  std::vector<prometheus::MetricFamily> Take() { return std::move(families_); }

  void BeginFamily(const FamilyDesc& family) override;
  void Sample(const SeriesLabels& labels, absl::string_view extra_name,
              absl::string_view extra_value, double value) override;
  void Histogram(const SeriesLabels& labels, const uint64_t* cumulative, double sum) override;

 private:
  prometheus::ClientMetric& Next(const SeriesLabels& labels);

  const FamilyDesc* family_ = nullptr;
  bool started_ = false;
  std::vector<prometheus::MetricFamily> families_;
};

// Appends `v` as prometheus-cpp 1.0 writes a double (printf "%.16g"; Nan, +Inf, -Inf). Integral
// values below 1e16 take a fast path with the same result. At most 32 characters.
char* FormatDouble(char* p, double v);

}  // namespace dmashim
