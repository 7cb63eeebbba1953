// Helpers for the stats-segment and exporter tests: a throwaway run directory, raw file edits
// (to forge hostile segments) and running the real dmashim-exporter binary.
#pragma once

#include <sys/types.h>

#include <optional>
#include <string>
#include <vector>

namespace dmashim::testing {

// A fresh 0700 directory under /tmp, removed with everything in it when the object goes.
class TempDir {
 public:
  TempDir();
  ~TempDir();
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const std::string& path() const { return path_; }
  std::string operator/(const std::string& name) const { return path_ + "/" + name; }

 private:
  std::string path_;
};

std::string ReadFile(const std::string& path);
void WriteFile(const std::string& path, const std::string& bytes);

// Overwrites sizeof(T) bytes of `bytes` at `offset` with `value`.
template <typename T>
void Poke(std::string& bytes, size_t offset, T value) {
  bytes.replace(offset, sizeof value, reinterpret_cast<const char*>(&value), sizeof value);
}

struct RunResult {
  int exit_code = -1;  // -1: killed by a signal
  std::string out;     // stdout
  std::string err;     // stderr
};

// Runs `argv` (argv[0] a path), feeding `input` on stdin, optionally as `uid` (gid the same).
RunResult Run(const std::vector<std::string>& argv, const std::string& input = "",
              std::optional<uid_t> uid = std::nullopt);

// The value of the exposition sample `series` (e.g. `m{a="b"}` or `m`), if present.
std::optional<double> Sample(const std::string& text, const std::string& series);

// The process's comm (as the kernel truncates it), for labels.
std::string OwnComm();

}  // namespace dmashim::testing
