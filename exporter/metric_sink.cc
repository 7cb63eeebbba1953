#include "exporter/metric_sink.h"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstring>

namespace dmashim {
namespace {

char* Put(char* p, absl::string_view s) {
  memcpy(p, s.data(), s.size());
  return p + s.size();
}

// A label value as prometheus-cpp writes it: backslash, double quote and newline escaped.
char* PutEscaped(char* p, absl::string_view s) {
  for (char c : s) {
    switch (c) {
      case '\\':
        *p++ = '\\';
        *p++ = '\\';
        break;
      case '"':
        *p++ = '\\';
        *p++ = '"';
        break;
      case '\n':
        *p++ = '\\';
        *p++ = 'n';
        break;
      default:
        *p++ = c;
    }
  }
  return p;
}

char* PutUint(char* p, uint64_t v) {
  char tmp[20];
  char* t = tmp + sizeof tmp;
  do {
    *--t = static_cast<char>('0' + v % 10);
    v /= 10;
  } while (v != 0);
  return Put(p, absl::string_view(t, static_cast<size_t>(tmp + sizeof tmp - t)));
}

const char* TypeName(prometheus::MetricType type) {
  switch (type) {
    case prometheus::MetricType::Counter:
      return "counter";
    case prometheus::MetricType::Gauge:
      return "gauge";
    case prometheus::MetricType::Histogram:
      return "histogram";
    case prometheus::MetricType::Summary:
      return "summary";
    case prometheus::MetricType::Untyped:
      break;
  }
  return "untyped";
}

}  // namespace

char* FormatDouble(char* p, double v) {
  if (std::isnan(v)) return Put(p, "Nan");
  if (std::isinf(v)) return Put(p, v < 0 ? "-Inf" : "+Inf");
  // "%.16g" prints an integer below 1e16 in full, with no exponent; -0 keeps its sign.
  if (std::fabs(v) < 1e16 && v == std::trunc(v)) {
    if (std::signbit(v)) *p++ = '-';
    return PutUint(p, static_cast<uint64_t>(std::fabs(v)));
  }
  // Defined as printf's "%.*g" with that precision, without printf's locale and stream costs.
  return std::to_chars(p, p + 32, v, std::chars_format::general, 16).ptr;
}

SeriesLabels& SeriesLabels::Add(absl::string_view name, absl::string_view value) {
  pairs_.push_back({std::string(name), std::string(value)});
  size_t at = text_.size();
  text_.resize(at + (at != 0 ? 1 : 0) + name.size() + 3 + 2 * value.size());
  char* p = text_.data() + at;
  if (at != 0) *p++ = ',';
  p = Put(p, name);
  p = Put(p, "=\"");
  p = PutEscaped(p, value);
  *p++ = '"';
  text_.resize(static_cast<size_t>(p - text_.data()));
  return *this;
}

char* TextSink::Reserve(size_t n) {
  if (buf_.size() - size_ < n) buf_.resize(std::max(2 * buf_.size(), size_ + n + (1u << 16)));
  return buf_.data() + size_;
}

void TextSink::BeginFamily(const FamilyDesc& family) {
  family_ = &family;
  name_ = family.name;
  header_written_ = false;
  le_tail_.clear();
  char num[32];
  for (double bound : family.buckets)
    le_tail_.push_back(std::string(num, FormatDouble(num, bound)) + "\"} ");
}

void TextSink::WriteHeaderOnce() {
  if (header_written_) return;
  header_written_ = true;
  absl::string_view name = name_, help = family_->help, type = TypeName(family_->type);
  char* p = Reserve(2 * name.size() + help.size() + type.size() + 20);
  if (!help.empty()) {
    p = Put(p, "# HELP ");
    p = Put(p, name);
    *p++ = ' ';
    p = Put(p, help);
    *p++ = '\n';
  }
  p = Put(p, "# TYPE ");
  p = Put(p, name);
  *p++ = ' ';
  p = Put(p, type);
  *p++ = '\n';
  Commit(p);
}

char* TextSink::Head(char* p, absl::string_view suffix, const SeriesLabels& labels,
                     absl::string_view extra_name, absl::string_view extra_value) const {
  p = Put(p, name_);
  p = Put(p, suffix);
  absl::string_view text = labels.text();
  if (!text.empty() || !extra_name.empty()) {
    *p++ = '{';
    p = Put(p, text);
    if (!extra_name.empty()) {
      if (!text.empty()) *p++ = ',';
      p = Put(p, extra_name);
      *p++ = '=';
      *p++ = '"';
      p = PutEscaped(p, extra_value);
      *p++ = '"';
    }
    *p++ = '}';
  }
  *p++ = ' ';
  return p;
}

void TextSink::Sample(const SeriesLabels& labels, absl::string_view extra_name,
                      absl::string_view extra_value, double value) {
  WriteHeaderOnce();
  char* p = Reserve(name_.size() + labels.text().size() + extra_name.size() +
                    2 * extra_value.size() + 48);
  p = Head(p, "", labels, extra_name, extra_value);
  p = FormatDouble(p, value);
  *p++ = '\n';
  Commit(p);
}

void TextSink::Histogram(const SeriesLabels& labels, const uint64_t* cumulative, double sum) {
  WriteHeaderOnce();
  const size_t n = le_tail_.size();
  const uint64_t count = n != 0 ? cumulative[n - 1] : 0;
  // Every line: name + "_bucket" + labels + le="…" (≤ 32) + a value (≤ 32) + punctuation.
  const size_t line = name_.size() + labels.text().size() + 96;
  char* p = Reserve((n + 3) * line);
  p = Head(p, "_count", labels, "", "");
  p = PutUint(p, count);
  *p++ = '\n';
  p = Head(p, "_sum", labels, "", "");
  p = FormatDouble(p, sum);
  *p++ = '\n';
  // Every bucket line starts with `name_bucket{labels,le="`: written once, then copied.
  const char* prefix = p;
  p = Put(p, name_);
  p = Put(p, "_bucket{");
  p = Put(p, labels.text());
  if (!labels.text().empty()) *p++ = ',';
  p = Put(p, "le=\"");
  const size_t prefix_size = static_cast<size_t>(p - prefix);
  for (size_t i = 0; i < n; ++i) {
    if (i != 0) p = Put(p, absl::string_view(prefix, prefix_size));
    p = Put(p, le_tail_[i]);
    p = PutUint(p, cumulative[i]);
    *p++ = '\n';
  }
  // prometheus-cpp adds the +Inf bucket when the bounds do not end with it.
  if (n == 0 || !std::isinf(family_->buckets[n - 1])) {
    if (n != 0) p = Put(p, absl::string_view(prefix, prefix_size));
    p = Put(p, "+Inf\"} ");
    p = PutUint(p, count);
    *p++ = '\n';
  }
  Commit(p);
}

void FamilySink::BeginFamily(const FamilyDesc& family) {
  family_ = &family;
  started_ = false;
}

prometheus::ClientMetric& FamilySink::Next(const SeriesLabels& labels) {
  if (!started_) {
    started_ = true;
    families_.push_back({family_->name, family_->help, family_->type, {}});
  }
  prometheus::ClientMetric& m = families_.back().metric.emplace_back();
  m.label = labels.pairs();
  return m;
}

void FamilySink::Sample(const SeriesLabels& labels, absl::string_view extra_name,
                        absl::string_view extra_value, double value) {
  prometheus::ClientMetric& m = Next(labels);
  if (!extra_name.empty()) m.label.push_back({std::string(extra_name), std::string(extra_value)});
  switch (family_->type) {
    case prometheus::MetricType::Counter:
      m.counter.value = value;
      break;
    case prometheus::MetricType::Gauge:
      m.gauge.value = value;
      break;
    default:
      m.untyped.value = value;
  }
}

void FamilySink::Histogram(const SeriesLabels& labels, const uint64_t* cumulative, double sum) {
  prometheus::ClientMetric& m = Next(labels);
  const size_t n = family_->buckets.size();
  for (size_t i = 0; i < n; ++i) m.histogram.bucket.push_back({cumulative[i], family_->buckets[i]});
  m.histogram.sample_count = n != 0 ? cumulative[n - 1] : 0;
  m.histogram.sample_sum = sum;
}

}  // namespace dmashim
