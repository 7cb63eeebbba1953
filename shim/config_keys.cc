// The key table's helpers: names, environment spellings and the README rendering of config_keys.h.
#include "shim/config_keys.h"

#include <algorithm>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "absl/strings/string_view.h"

namespace dmashim {

const char* KeyTypeText(KeyType type) {
  switch (type) {
    case KeyType::kBool: return "true or false";
    case KeyType::kCount: return "a non-negative integer";
    case KeyType::kString: return "a string";
    case KeyType::kPath: return "an absolute path or \"\"";
    case KeyType::kGlob: return "a non-empty glob such as \"librte_*.so\"";
    case KeyType::kSize:
      return "a size such as \"64KiB\", \"2MiB\", \"1GiB\" or an integer number of bytes";
    case KeyType::kDuration: return "a positive duration such as \"50ms\" or \"10s\"";
    case KeyType::kMode: return "\"block\", \"fail-fast\" or \"timeout:<duration>\"";
    case KeyType::kZero: return "\"eager\", \"background\" or \"none\"";
    case KeyType::kPrefault: return "\"first-use\" or \"startup\"";
    case KeyType::kCall: return "\"mmap\", \"shm\", \"mlock\", \"cuda\" or \"ibverbs\"";
    case KeyType::kShare: return "\"private\", \"shared\" or \"any\"";
    case KeyType::kMatch: return "a table such as { call = \"mmap\", hugetlb = true, size = \"2MiB\" }";
  }
  return "a value";
}

std::string KeyPath(const ConfigKey& key, const std::string& pool) {
  switch (key.section) {
    case KeySection::kTop: return key.name;
    case KeySection::kIntercept: return absl::StrCat("intercept.", key.name);
    case KeySection::kPool: return absl::StrCat("pool.", pool, ".", key.name);
  }
  return key.name;
}

std::string EnvWord(const std::string& name) {
  std::string out = absl::AsciiStrToUpper(name);
  std::replace(out.begin(), out.end(), '-', '_');
  std::replace(out.begin(), out.end(), '.', '_');
  return out;
}

std::string KeyEnvName(const ConfigKey& key, const std::string& pool) {
  switch (key.section) {
    case KeySection::kTop: return absl::StrCat("DMASHIM_", EnvWord(key.name));
    case KeySection::kIntercept: return absl::StrCat("DMASHIM_INTERCEPT_", EnvWord(key.name));
    case KeySection::kPool:
      // "<NAME>" is a placeholder for the docs; a real pool name gets the env spelling.
      return absl::StrCat("DMASHIM_POOL_", pool == "<NAME>" ? pool : EnvWord(pool), "_",
                          EnvWord(key.name));
  }
  return "";
}

namespace {

// Plain text in a Markdown table cell: '|' would end the cell, "<duration>" would vanish as HTML.
std::string MarkdownText(absl::string_view text) {
  return absl::StrReplaceAll(text, {{"|", "\\|"}, {"<", "&lt;"}, {">", "&gt;"}});
}

}  // namespace

std::string RenderKeyTableMarkdown() {
  std::string out =
      "| Key | Environment | Type | Default | Description |\n"
      "| --- | --- | --- | --- | --- |\n";
  for (const ConfigKey& key : kConfigKeys) {
    // A match table is not a scalar: it has no variable of its own, only its match.* fields.
    std::string env = key.type == KeyType::kMatch ? "—" : absl::StrCat("`", KeyEnvName(key), "`");
    std::string def = key.default_text[0] == '\0' ? "unset" : absl::StrCat("`", key.default_text, "`");
    absl::StrAppend(&out, "| `", KeyPath(key), "` | ", env, " | ", MarkdownText(KeyTypeText(key.type)),
                    " | ", def, " | ", MarkdownText(key.doc), " |\n");
  }
  return out;
}

}  // namespace dmashim
