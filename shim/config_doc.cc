// dmashim-config-doc: prints the configuration key table as Markdown, or with --update FILE
// replaces the block between <!-- config-keys:begin --> and <!-- config-keys:end --> in FILE, so
// the README's option list always comes from config_keys.h.
#include <cstdio>
#include <cstring>
#include <fstream>
#include <iostream>
#include <sstream>
#include <string>

#include "shim/config_keys.h"

namespace {

constexpr char kBegin[] = "<!-- config-keys:begin -->";
constexpr char kEnd[] = "<!-- config-keys:end -->";

int Update(const char* path) {
  std::ifstream in(path);
  if (!in) {
    std::fprintf(stderr, "dmashim-config-doc: cannot read %s\n", path);
    return 1;
  }
  std::stringstream buf;
  buf << in.rdbuf();
  std::string text = buf.str();
  const size_t begin = text.find(kBegin);
  const size_t end = text.find(kEnd);
  if (begin == std::string::npos || end == std::string::npos || end < begin) {
    std::fprintf(stderr, "dmashim-config-doc: %s has no %s … %s block\n", path, kBegin, kEnd);
    return 1;
  }
  const size_t body = begin + std::strlen(kBegin);
  std::string updated = text.substr(0, body) + "\n" + dmashim::RenderKeyTableMarkdown() +
                        text.substr(end);
  if (updated == text) return 0;  // leave the file's timestamp alone when nothing changed
  std::ofstream out(path, std::ios::trunc);
  out << updated;
  return out ? 0 : 1;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc == 3 && std::strcmp(argv[1], "--update") == 0) return Update(argv[2]);
  if (argc != 1) {
    std::fprintf(stderr, "usage: dmashim-config-doc [--update README.md]\n");
    return 2;
  }
  std::cout << dmashim::RenderKeyTableMarkdown();
  return 0;
}
