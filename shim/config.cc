// The configuration parser (DESIGN §6), driven by the key table in config_keys.h. Contract: nothing
// here throws out or aborts — toml++ reports syntax errors by exception, which is caught at the
// one call site — and every problem becomes one "WHERE: KEY: expected …, got …" line in
// Config::errors, so a bad file costs the host one stderr line, never the process (DESIGN §3.8).
#include "shim/config.h"
#include "shim/config_internal.h"

#include <algorithm>
#include <array>
#include <cstdint>
#include <cstdio>
#include <exception>
#include <string_view>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_replace.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "pools/stats.h"
#include "shim/config_keys.h"

#include <toml++/toml.h>

namespace dmashim {

// ---------------------------------------------------------------------------------------------
// The parser.

namespace {

// Where a value came from: "FILE:LINE" and the key path, or "environment" and "VAR (key path)".
struct Origin {
  std::string where;
  std::string label;
};

// A value to convert: from the file (a toml++ node) or from the environment (text).
struct RawValue {
  const toml::node* node = nullptr;
  const char* env = nullptr;
};

// The converted value; which field is meaningful depends on the key's type.
struct Typed {
  bool b = false;
  uint64_t n = 0;
  std::string s;
  absl::Duration d;
  WaitPolicy mode;
  ZeroMode zero = ZeroMode::kBackground;
  Prefault prefault = Prefault::kFirstUse;
  CallFamily call = CallFamily::kMmap;
  Share share = Share::kAny;
};

struct PoolDraft {
  PoolConfig pool;
  std::array<Origin, kNumConfigKeys> origin;  // empty `where`: key not given
  std::array<bool, kNumConfigKeys> bad{};     // a message was already printed for it
  bool given(KeyId id) const { return !origin[static_cast<size_t>(id)].where.empty(); }
  bool ok(KeyId id) const { return given(id) && !bad[static_cast<size_t>(id)]; }
};

// Control characters are escaped so that one problem stays one line, whatever the file holds.
std::string OneLine(absl::string_view s) {
  std::string out;
  for (char c : s) {
    if (static_cast<unsigned char>(c) < 0x20 || c == 0x7f) {
      char hex[5];
      snprintf(hex, sizeof(hex), "\\x%02x", static_cast<unsigned char>(c));
      out += hex;
    } else {
      out += c;
    }
  }
  return out;
}

std::string Quote(absl::string_view s) {
  constexpr size_t kMax = 64;  // a pasted blob does not turn a message into a page
  if (s.size() > kMax) return absl::StrCat("\"", OneLine(s.substr(0, kMax)), "…\"");
  return absl::StrCat("\"", OneLine(s), "\"");
}

std::string Describe(const toml::node& node) {
  switch (node.type()) {
    case toml::node_type::string:
      return absl::StrCat("the string ", Quote(node.as_string()->get()));
    case toml::node_type::integer: return absl::StrCat("the integer ", node.as_integer()->get());
    case toml::node_type::floating_point:
      return absl::StrCat("the float ", node.as_floating_point()->get());
    case toml::node_type::boolean:
      return absl::StrCat("the boolean ", node.as_boolean()->get() ? "true" : "false");
    case toml::node_type::table: return "a table";
    case toml::node_type::array: return "an array";
    default: return "a date or time";
  }
}

std::string FormatSize(uint64_t bytes) {
  constexpr uint64_t kKiB = 1024, kMiB = kKiB << 10, kGiB = kMiB << 10;
  if (bytes != 0 && bytes % kGiB == 0) return absl::StrCat(bytes / kGiB, "GiB");
  if (bytes != 0 && bytes % kMiB == 0) return absl::StrCat(bytes / kMiB, "MiB");
  if (bytes != 0 && bytes % kKiB == 0) return absl::StrCat(bytes / kKiB, "KiB");
  return absl::StrCat(bytes);
}

// "2MiB" → 2097152. Units are binary only: "2MB" is ambiguous, so it is an error, not a guess.
bool ParseSizeText(absl::string_view text, uint64_t* out) {
  size_t digits = 0;
  while (digits < text.size() && absl::ascii_isdigit(static_cast<unsigned char>(text[digits]))) {
    ++digits;
  }
  uint64_t n = 0;
  if (digits == 0 || !absl::SimpleAtoi(text.substr(0, digits), &n)) return false;
  absl::string_view unit = text.substr(digits);
  int shift = 0;
  if (unit.empty() || unit == "B") {
    shift = 0;
  } else if (unit == "KiB") {
    shift = 10;
  } else if (unit == "MiB") {
    shift = 20;
  } else if (unit == "GiB") {
    shift = 30;
  } else {
    return false;
  }
  if (n == 0 || n > (UINT64_MAX >> shift)) return false;
  *out = n << shift;
  return true;
}

// Converts `raw` to `type`; on failure returns false with *error = "expected …, got …".
bool Convert(KeyType type, const RawValue& raw, Typed* out, std::string* error) {
  const std::string expected = absl::StrCat("expected ", KeyTypeText(type), ", got ");
  // Step 1: the scalar. Env values are text; file values must have the right TOML type.
  std::string text;
  if (raw.node != nullptr) {
    const toml::node& node = *raw.node;
    if (type == KeyType::kBool) {
      if (!node.is_boolean()) return *error = expected + Describe(node), false;
      out->b = node.as_boolean()->get();
      return true;
    }
    if (type == KeyType::kCount || (type == KeyType::kSize && node.is_integer())) {
      if (!node.is_integer() || node.as_integer()->get() < 0 ||
          (type == KeyType::kSize && node.as_integer()->get() == 0)) {
        return *error = expected + Describe(node), false;
      }
      out->n = static_cast<uint64_t>(node.as_integer()->get());
      return true;
    }
    if (!node.is_string()) return *error = expected + Describe(node), false;
    text = node.as_string()->get();
  } else {
    text = raw.env;
    const std::string got = Quote(text);
    if (type == KeyType::kBool) {
      const std::string word = absl::AsciiStrToLower(text);
      if (word == "1" || word == "true" || word == "yes" || word == "on") return out->b = true, true;
      if (word == "0" || word == "false" || word == "no" || word == "off") return out->b = false, true;
      return *error = expected + got, false;
    }
    if (type == KeyType::kCount) {
      // SimpleAtoi would take "+3" and " 3"; a count is plain digits.
      if (text.empty() || !std::all_of(text.begin(), text.end(), [](char c) {
            return absl::ascii_isdigit(static_cast<unsigned char>(c));
          }) || !absl::SimpleAtoi(text, &out->n)) {
        return *error = expected + got, false;
      }
      return true;
    }
  }
  // Step 2: the text's own syntax.
  const std::string got = Quote(text);
  switch (type) {
    case KeyType::kString: out->s = text; return true;
    case KeyType::kPath:
      if (!text.empty() && text[0] != '/') return *error = expected + got, false;
      out->s = text;
      return true;
    case KeyType::kGlob:
      if (text.empty()) return *error = expected + got, false;
      out->s = text;
      return true;
    case KeyType::kSize:
      if (!ParseSizeText(text, &out->n)) return *error = expected + got, false;
      return true;
    case KeyType::kDuration:
      if (!absl::ParseDuration(text, &out->d) || out->d <= absl::ZeroDuration() ||
          out->d == absl::InfiniteDuration()) {
        return *error = expected + got, false;
      }
      return true;
    case KeyType::kMode: {
      absl::StatusOr<WaitPolicy> mode = ParseMode(text);
      if (!mode.ok()) return *error = std::string(mode.status().message()), false;
      out->mode = *mode;
      return true;
    }
    case KeyType::kZero: {
      absl::StatusOr<ZeroMode> zero = ParseZeroMode(text);
      if (!zero.ok()) return *error = std::string(zero.status().message()), false;
      out->zero = *zero;
      return true;
    }
    case KeyType::kPrefault:
      if (text == "first-use") return out->prefault = Prefault::kFirstUse, true;
      if (text == "startup") return out->prefault = Prefault::kStartup, true;
      return *error = expected + got, false;
    case KeyType::kCall:
      if (text == "mmap") return out->call = CallFamily::kMmap, true;
      if (text == "shm") return out->call = CallFamily::kShm, true;
      if (text == "mlock") return out->call = CallFamily::kMlock, true;
      if (text == "cuda") return out->call = CallFamily::kCuda, true;
      if (text == "ibverbs") return out->call = CallFamily::kIbverbs, true;
      return *error = expected + got, false;
    case KeyType::kShare:
      if (text == "private") return out->share = Share::kPrivate, true;
      if (text == "shared") return out->share = Share::kShared, true;
      if (text == "any") return out->share = Share::kAny, true;
      return *error = expected + got, false;
    case KeyType::kBool:
    case KeyType::kCount:
    case KeyType::kMatch:
      break;
  }
  return *error = expected + got, false;
}

bool IsPinnedFamily(CallFamily call) {
  return call == CallFamily::kMlock || call == CallFamily::kCuda || call == CallFamily::kIbverbs;
}

// Pool names become metric labels and env-var words, so they are kept plain — and short enough for
// the pool's stats record (kPoolNameMax, NUL included), or Mempool::Create would refuse the pool.
bool ValidPoolName(absl::string_view name) {
  if (name.empty() || name.size() >= kPoolNameMax) return false;
  return std::all_of(name.begin(), name.end(), [](char c) {
    return absl::ascii_islower(static_cast<unsigned char>(c)) ||
           absl::ascii_isdigit(static_cast<unsigned char>(c)) || c == '-' || c == '_';
  });
}

// toml++ hands out std::string_view; Debian's Abseil has its own string_view, so convert once.
std::string KeyName(const toml::key& key) { return std::string(key.str().data(), key.str().size()); }

// The entries of a table in file order (toml++ keeps them sorted by key), so messages and pools
// come out in the order the user wrote them.
std::vector<std::pair<const toml::key*, const toml::node*>> InFileOrder(const toml::table& t) {
  std::vector<std::pair<const toml::key*, const toml::node*>> out;
  for (auto&& [k, v] : t) out.emplace_back(&k, &v);
  std::stable_sort(out.begin(), out.end(), [](const auto& a, const auto& b) {
    return a.first->source().begin.line < b.first->source().begin.line;
  });
  return out;
}

const ConfigKey* FindKey(KeySection section, absl::string_view name) {
  for (const ConfigKey& key : kConfigKeys) {
    if (key.section == section && name == key.name) return &key;
  }
  return nullptr;
}

std::string KnownNames(KeySection section, absl::string_view prefix) {
  std::vector<std::string> names;
  for (const ConfigKey& key : kConfigKeys) {
    absl::string_view name = key.name;
    if (key.section == section && absl::ConsumePrefix(&name, prefix) &&
        !absl::StrContains(name, '.')) {
      names.emplace_back(name);
    }
  }
  return absl::StrJoin(names, ", ");
}

// The key a syntax error is about, read from the text itself because toml++ stops before it
// knows: "pool.rx.reserve" for a `reserve = …` line under [pool.rx], "pool.rx" for a header line,
// "toml" when the line is neither.
std::string KeyAtLine(absl::string_view text, int line) {
  std::vector<absl::string_view> lines = absl::StrSplit(text, '\n');
  if (line < 1 || static_cast<size_t>(line) > lines.size()) return "toml";
  // A header's name, without brackets ("[[a]]" too); empty when `l` is no header.
  auto header = [](absl::string_view l) -> std::string {
    l = absl::StripAsciiWhitespace(l);
    if (!absl::StartsWith(l, "[")) return "";
    l = l.substr(0, l.find('#'));
    return absl::StrReplaceAll(l, {{"[", ""}, {"]", ""}, {" ", ""}, {"\t", ""}, {"\"", ""}});
  };
  const absl::string_view here = absl::StripAsciiWhitespace(lines[line - 1]);
  if (std::string h = header(here); !h.empty()) return h;
  const size_t eq = here.find('=');
  if (eq == absl::string_view::npos || eq == 0) return "toml";
  std::string key = absl::StrReplaceAll(absl::StripAsciiWhitespace(here.substr(0, eq)), {{"\"", ""}, {" ", ""}});
  for (int i = line - 2; i >= 0; --i) {
    if (std::string h = header(lines[i]); !h.empty()) return absl::StrCat(h, ".", key);
  }
  return key;
}

class Builder {
 public:
  explicit Builder(std::string filename) : filename_(std::move(filename)) {}

  void Error(const Origin& at, absl::string_view message) {
    config_.errors.push_back(OneLine(absl::StrCat(at.where, ": ", at.label, ": ", message)));
  }

  Origin FileOrigin(const toml::source_region& src, std::string label) const {
    return {absl::StrCat(filename_, ":", src.begin.line), std::move(label)};
  }

  void ParseText(absl::string_view text);
  void ApplyEnvironment(const Environment& env);
  Config Finish();

  Config& config() { return config_; }

 private:
  void ParseSection(const toml::table& table, KeySection section, absl::string_view path);
  void ParsePools(const toml::table& table);
  void ParsePoolTable(PoolDraft* draft, const toml::table& table, absl::string_view prefix);
  void Set(const ConfigKey& key, const RawValue& raw, const Origin& at, PoolDraft* pool);
  void FinishPool(PoolDraft* draft);

  std::string filename_;
  Config config_;
  std::vector<PoolDraft> pools_;
};

// Converts and stores one key. `pool` is null for top-level and [intercept] keys.
void Builder::Set(const ConfigKey& key, const RawValue& raw, const Origin& at, PoolDraft* pool) {
  Typed v;
  std::string error;
  const size_t index = static_cast<size_t>(key.id);
  if (pool != nullptr) pool->origin[index] = at;
  if (!Convert(key.type, raw, &v, &error)) {
    if (pool != nullptr) pool->bad[index] = true;
    Error(at, error);
    return;
  }
  if (pool != nullptr) pool->bad[index] = false;  // a good env override replaces a bad file value
  Config& c = config_;
  PoolConfig* p = pool != nullptr ? &pool->pool : nullptr;
  switch (key.id) {
    case KeyId::kStrict: c.strict = v.b; break;
    case KeyId::kStats: c.stats = v.b; break;
    case KeyId::kRunDir: c.run_dir = v.s; break;
    case KeyId::kCountPassthrough: c.count_passthrough = v.b; break;
    case KeyId::kBiasedLocks: c.biased_locks = v.b; break;
    case KeyId::kDefaultMode: c.default_policy = v.mode; break;
    case KeyId::kInterceptMmap: c.intercept_mmap = v.b; break;
    case KeyId::kInterceptShm: c.intercept_shm = v.b; break;
    case KeyId::kInterceptMlock: c.intercept_mlock = v.b; break;
    case KeyId::kInterceptCuda: c.intercept_cuda = v.b; break;
    case KeyId::kInterceptIbverbs: c.intercept_ibverbs = v.b; break;
    case KeyId::kMatchCall: p->match.call = v.call; break;
    case KeyId::kMatchHugetlb: p->match.hugetlb = v.b; break;
    case KeyId::kMatchSize: p->match.size = v.n; break;
    case KeyId::kMatchShare: p->match.share = v.share; break;
    case KeyId::kMatchCaller: p->match.caller = v.s; break;
    case KeyId::kReserve: p->reserve = v.n; break;
    case KeyId::kKeep: p->keep = v.n; break;
    case KeyId::kMax: p->max = v.n; break;
    case KeyId::kMode: {
      const bool interruptible = p->policy.interruptible;  // a separate key
      p->policy = v.mode;
      p->policy.interruptible = interruptible;
      break;
    }
    case KeyId::kInterruptible: p->policy.interruptible = v.b; break;
    case KeyId::kZero: p->zero = v.zero; break;
    case KeyId::kPrefault: p->prefault = v.prefault; break;
    case KeyId::kRetryInterval: p->retry_interval = v.d; break;
    case KeyId::kRetryMax: p->retry_max = v.d; break;
    case KeyId::kWatchdog: p->watchdog = v.d; break;
    case KeyId::kMatch:
    case KeyId::kCount: break;  // tables are walked by the caller; kCount is not a key
  }
}

void Builder::ParseText(absl::string_view text) {
  toml::table root;
  try {
    root = toml::parse(std::string_view(text.data(), text.size()),
                       std::string_view(filename_.data(), filename_.size()));
  } catch (const toml::parse_error& e) {
    const int line = static_cast<int>(e.source().begin.line);
    Error({absl::StrCat(filename_, ":", line), KeyAtLine(text, line)},
          absl::StrCat("expected valid TOML, got ",
                       absl::StripPrefix(absl::string_view(e.description().data(),
                                                           e.description().size()),
                                         "Error while parsing ")));
    return;
  } catch (const std::exception& e) {  // bad_alloc: still one line, never an escape
    Error({filename_, "toml"}, absl::StrCat("expected a readable file, got ", e.what()));
    return;
  }
  ParseSection(root, KeySection::kTop, "");
}

void Builder::ParseSection(const toml::table& table, KeySection section, absl::string_view path) {
  for (const auto& [key, node] : InFileOrder(table)) {
    const std::string name = KeyName(*key);
    const std::string label = absl::StrCat(path, name);
    if (section == KeySection::kTop && (name == "intercept" || name == "pool")) {
      if (!node->is_table()) {
        Error(FileOrigin(key->source(), label), absl::StrCat("expected a table [", name,
                                                             name == "pool" ? ".NAME" : "",
                                                             "], got ", Describe(*node)));
      } else if (name == "intercept") {
        ParseSection(*node->as_table(), KeySection::kIntercept, "intercept.");
      } else {
        ParsePools(*node->as_table());
      }
      continue;
    }
    const ConfigKey* spec = FindKey(section, name);
    if (spec == nullptr) {
      const bool is_section = section == KeySection::kTop && node->is_table();
      Error(FileOrigin(key->source(), label),
            is_section ? absl::StrCat("expected a known section ([intercept] or [pool.NAME]), "
                                      "got [", name, "]")
                       : absl::StrCat("expected a known key (", KnownNames(section, ""),
                                      section == KeySection::kTop ? ", [intercept], [pool.NAME]" : "",
                                      "), got ", Quote(name)));
      continue;
    }
    Set(*spec, {node, nullptr}, FileOrigin(node->source(), label), nullptr);
  }
}

void Builder::ParsePools(const toml::table& table) {
  for (const auto& [key, node] : InFileOrder(table)) {
    const std::string name = KeyName(*key);
    const Origin at = FileOrigin(key->source(), absl::StrCat("pool.", name));
    if (!node->is_table()) {
      Error(at, absl::StrCat("expected a table [pool.", name, "], got ", Describe(*node)));
      continue;
    }
    if (!ValidPoolName(name)) {
      Error(at, absl::StrCat("expected a pool name of 1 to ", kPoolNameMax - 1,
                             " lowercase letters, digits, '-' and '_', got ", Quote(name)));
      continue;
    }
    // Two names with one env spelling could not both be overridden: refuse the second.
    const auto same_env = std::find_if(pools_.begin(), pools_.end(), [&](const PoolDraft& p) {
      return EnvWord(p.pool.name) == EnvWord(name);
    });
    if (same_env != pools_.end()) {
      Error(at, absl::StrCat("expected a name distinct from pool.", same_env->pool.name,
                             " (both are DMASHIM_POOL_", EnvWord(name), "_*), got ", Quote(name)));
      continue;
    }
    PoolDraft& draft = pools_.emplace_back();
    draft.pool.name = name;
    draft.pool.line = static_cast<int>(node->source().begin.line);
    ParsePoolTable(&draft, *node->as_table(), "");
  }
}

// Walks [pool.NAME] (prefix "") and its match table (prefix "match.").
void Builder::ParsePoolTable(PoolDraft* draft, const toml::table& table, absl::string_view prefix) {
  const std::string path = absl::StrCat("pool.", draft->pool.name, ".", prefix);
  for (const auto& [key, node] : InFileOrder(table)) {
    const std::string name = absl::StrCat(prefix, KeyName(*key));
    const ConfigKey* spec = FindKey(KeySection::kPool, name);
    const Origin at = FileOrigin(key->source(), absl::StrCat(path, KeyName(*key)));
    if (spec == nullptr) {
      Error(at, absl::StrCat("expected a known key (", KnownNames(KeySection::kPool, prefix),
                             "), got ", Quote(KeyName(*key))));
    } else if (spec->type == KeyType::kMatch) {
      if (!node->is_table()) {
        Error(at, absl::StrCat("expected ", KeyTypeText(KeyType::kMatch), ", got ", Describe(*node)));
        draft->bad[static_cast<size_t>(KeyId::kMatch)] = true;
      } else {
        ParsePoolTable(draft, *node->as_table(), "match.");
      }
    } else {
      Set(*spec, {node, nullptr}, FileOrigin(node->source(), at.label), draft);
    }
  }
}

void Builder::ApplyEnvironment(const Environment& env) {
  std::vector<std::string> names = env.DmashimNames();
  std::sort(names.begin(), names.end());  // deterministic messages whatever environ's order
  for (const std::string& var : names) {
    if (std::any_of(std::begin(kNonKeyVariables), std::end(kNonKeyVariables),
                    [&](const char* n) { return var == n; })) {
      continue;
    }
    const char* value = env.Get(var.c_str());
    if (value == nullptr) continue;
    const ConfigKey* found = nullptr;
    PoolDraft* found_pool = nullptr;
    int matches = 0;
    for (const ConfigKey& key : kConfigKeys) {
      if (key.type == KeyType::kMatch) continue;  // only its fields have variables
      if (key.section != KeySection::kPool) {
        if (var == KeyEnvName(key)) found = &key, ++matches;
        continue;
      }
      for (PoolDraft& draft : pools_) {
        if (var == KeyEnvName(key, draft.pool.name)) found = &key, found_pool = &draft, ++matches;
      }
    }
    if (matches != 1) {
      std::vector<std::string> pools;
      for (const PoolDraft& d : pools_) pools.push_back(d.pool.name);
      Error({"environment", var},
            matches == 0
                ? absl::StrCat("expected DMASHIM_<SECTION>_<KEY> naming a configuration key",
                               pools.empty() ? std::string(" (no pools are configured)")
                                             : absl::StrCat(" (pools: ", absl::StrJoin(pools, ", "), ")"),
                               ", got ", var)
                : absl::StrCat("expected a variable naming one key, got one that names ", matches,
                               " (pool names overlap)"));
      continue;
    }
    const std::string pool_name = found_pool != nullptr ? found_pool->pool.name : "";
    Set(*found, {nullptr, value},
        {"environment", absl::StrCat(var, " (", KeyPath(*found, pool_name), ")")}, found_pool);
  }
}

// Derives source and element size, and checks the rules that span keys. A key that already had
// its own message is not blamed again, so one mistake is one line.
void Builder::FinishPool(PoolDraft* draft) {
  PoolConfig& p = draft->pool;
  auto at = [&](KeyId id) -> const Origin& { return draft->origin[static_cast<size_t>(id)]; };
  const bool call_ok = !draft->bad[static_cast<size_t>(KeyId::kMatchCall)];
  if (call_ok && IsPinnedFamily(p.match.call)) {
    p.source = SourceKind::kPinned;
    if (draft->ok(KeyId::kMatchHugetlb)) {
      Error(at(KeyId::kMatchHugetlb),
            "expected no hugetlb with a pinned call (mlock, cuda, ibverbs), got hugetlb set");
      return;
    }
  } else if (call_ok) {
    // Only huge-page mmap/shm calls are pooled (DESIGN §5: every other mmap is not ours).
    if (draft->ok(KeyId::kMatchHugetlb) && !*p.match.hugetlb) {
      Error(at(KeyId::kMatchHugetlb),
            "expected true or unset (only huge-page mmap/shm calls are pooled), got false");
      return;
    }
    p.source = p.match.size == (size_t{1} << 30) ? SourceKind::kHuge1G : SourceKind::kHuge2M;
  } else {
    return;
  }
  const size_t page = SourcePageSize(p.source);
  if (draft->ok(KeyId::kMatchSize) && p.match.size % page != 0) {
    Error(at(KeyId::kMatchSize), absl::StrCat("expected a multiple of the ", FormatSize(page),
                                              " page size, got ", FormatSize(p.match.size)));
    return;
  }
  p.element_size = p.match.size != 0 ? p.match.size : page;
  if (p.max != 0 && draft->ok(KeyId::kMax)) {
    if (draft->ok(KeyId::kReserve) && p.reserve > p.max) {
      Error(at(KeyId::kReserve),
            absl::StrCat("expected at most max = ", p.max, ", got ", p.reserve));
    }
    if (draft->ok(KeyId::kKeep) && *p.keep > p.max) {
      Error(at(KeyId::kKeep), absl::StrCat("expected at most max = ", p.max, ", got ", *p.keep));
    }
  }
  if (!draft->bad[static_cast<size_t>(KeyId::kRetryInterval)] &&
      !draft->bad[static_cast<size_t>(KeyId::kRetryMax)] && p.retry_interval > p.retry_max) {
    const KeyId blame = draft->given(KeyId::kRetryInterval) ? KeyId::kRetryInterval : KeyId::kRetryMax;
    Error(at(blame), absl::StrCat("expected at most retry_max = ", absl::FormatDuration(p.retry_max),
                                  ", got ", absl::FormatDuration(p.retry_interval)));
  }
}

Config Builder::Finish() {
  for (PoolDraft& draft : pools_) {
    FinishPool(&draft);
    config_.pools.push_back(std::move(draft.pool));
  }
  pools_.clear();
  return std::move(config_);
}


// The last line of defence of "never throws out": only std::bad_alloc can get here.
Config OutOfMemory() {
  Config c;
  try {
    c.errors.emplace_back("dmashim: configuration: expected memory to parse it, got none");
  } catch (...) {
  }
  return c;
}

}  // namespace

namespace config_internal {

Config Build(const BuildInput& in) {
  try {
    Builder b{in.filename};
    b.config().path = in.path;
    if (!in.load_error.empty()) b.config().errors.push_back(in.load_error);
    if (in.text != nullptr) b.ParseText(*in.text);
    if (in.env != nullptr) b.ApplyEnvironment(*in.env);
    return b.Finish();
  } catch (...) {
    return OutOfMemory();
  }
}

}  // namespace config_internal

Config ParseConfig(absl::string_view toml_text, absl::string_view filename) {
  const std::string text(toml_text);
  return config_internal::Build({"", std::string(filename), &text, nullptr, ""});
}

}  // namespace dmashim
