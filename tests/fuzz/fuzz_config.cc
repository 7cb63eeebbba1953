// libFuzzer target: the configuration parser (DESIGN §9, issue 7 item 6). The input is a TOML file,
// optionally followed by a NUL byte and "NAME=value" lines that act as the process environment
// (DMASHIM_<SECTION>_<KEY> overrides), so both ways a configuration reaches the shim are fuzzed.
//
// Beyond "never crashes, never throws" (the parser's contract), a configuration the parser accepts
// must be one the pools accept: the shim builds a Mempool from every pool of an error-free Config,
// and a pool the parser let through but Mempool::Create refuses would be silently disabled.
#include <stddef.h>
#include <stdint.h>

#include <cstdio>
#include <cstdlib>
#include <map>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/string_view.h"
#include "pools/page_source.h"
#include "pools/stats.h"
#include "shim/config.h"
#include "shim/config_internal.h"

namespace {

class FakeEnv final : public dmashim::Environment {
 public:
  explicit FakeEnv(absl::string_view lines) {
    size_t pos = 0;
    while (pos < lines.size()) {
      size_t nl = lines.find('\n', pos);
      if (nl == absl::string_view::npos) nl = lines.size();
      absl::string_view line = lines.substr(pos, nl - pos);
      pos = nl + 1;
      const size_t eq = line.find('=');
      if (eq == absl::string_view::npos || eq == 0) continue;
      vars_[std::string(line.substr(0, eq))] = std::string(line.substr(eq + 1));
    }
  }
  const char* Get(const char* name) const override {
    auto it = vars_.find(name);
    return it == vars_.end() ? nullptr : it->second.c_str();
  }
  std::vector<std::string> DmashimNames() const override {
    std::vector<std::string> names;
    for (const auto& [k, v] : vars_) {
      if (absl::StartsWith(k, "DMASHIM_")) names.push_back(k);
    }
    return names;
  }

 private:
  std::map<std::string, std::string> vars_;
};

[[noreturn]] void Broken(const dmashim::PoolConfig& p, const char* what) {
  fprintf(stderr, "fuzz_config: accepted pool \"%s\" (line %d) breaks a pool rule: %s\n",
          p.name.c_str(), p.line, what);
  abort();
}

void CheckAccepted(const dmashim::Config& c) {
  if (!c.errors.empty()) {
    for (const std::string& e : c.errors) {
      // One line per problem (DESIGN §3.8).
      if (e.empty() || e.find('\n') != std::string::npos) {
        fprintf(stderr, "fuzz_config: error message is not one line: [%s]\n", e.c_str());
        abort();
      }
    }
    return;
  }
  for (const dmashim::PoolConfig& p : c.pools) {
    const size_t page = dmashim::SourcePageSize(p.source);
    if (p.name.empty() || p.name.size() >= dmashim::kPoolNameMax) Broken(p, "name length");
    if (p.element_size == 0 || p.element_size % page != 0) Broken(p, "element size");
    if (p.max != 0 && p.reserve > p.max) Broken(p, "reserve above max");
    if (p.policy.mode == dmashim::Mode::kTimeout && p.policy.timeout <= absl::ZeroDuration())
      Broken(p, "timeout not positive");
    if (p.retry_interval <= absl::ZeroDuration() || p.retry_max < p.retry_interval)
      Broken(p, "retry interval");
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const absl::string_view in(reinterpret_cast<const char*>(data), size);
  const size_t nul = in.find('\0');
  const std::string text(in.substr(0, nul));

  // The file alone, as ParseConfig sees it.
  CheckAccepted(dmashim::ParseConfig(text, "fuzz.toml"));

  // The file with the environment's overrides, as LoadConfig builds it.
  if (nul != absl::string_view::npos) {
    FakeEnv env(in.substr(nul + 1));
    dmashim::config_internal::BuildInput b;
    b.path = "fuzz.toml";
    b.filename = "fuzz.toml";
    b.text = &text;
    b.env = &env;
    CheckAccepted(dmashim::config_internal::Build(b));
  }
  return 0;
}
