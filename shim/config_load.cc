// Finding and reading the configuration (DESIGN §6, §3.7): DMASHIM_CONFIG or the default file,
// the environment's overrides, and secure mode for setuid programs, where the environment belongs
// to the unprivileged caller and only a root-owned, root-writable-only default file is read.
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "shim/config.h"
#include "shim/config_internal.h"

extern char** environ;

namespace dmashim {
namespace {

constexpr size_t kMaxConfigBytes = size_t{1} << 20;  // a config file is small; refuse surprises

// Reads a whole file through one descriptor, so what was checked (owner, mode) is what is read.
// Returns 0, or an errno (ENOENT for a missing file); *error says what was wrong otherwise.
int ReadConfigFile(const std::string& path, bool require_root_owned, std::string* text,
                   std::string* error) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOCTTY);
  if (fd < 0) return errno;
  struct stat st;
  int rc = 0;
  if (::fstat(fd, &st) != 0) {
    rc = errno;
  } else if (!S_ISREG(st.st_mode)) {
    *error = "expected a regular file, got another kind of file";
    rc = EINVAL;
  } else if (require_root_owned && (st.st_uid != 0 || (st.st_mode & (S_IWGRP | S_IWOTH)) != 0)) {
    char mode[8];
    snprintf(mode, sizeof(mode), "%04o", static_cast<unsigned>(st.st_mode & 07777));
    *error = absl::StrCat("expected a file owned by root and not writable by group or others, "
                          "got owner uid ", st.st_uid, ", mode ", mode);
    rc = EPERM;
  } else if (static_cast<uint64_t>(st.st_size) > kMaxConfigBytes) {
    *error = absl::StrCat("expected a file of at most ", "1MiB", ", got ",
                          st.st_size, " bytes");
    rc = EFBIG;
  } else {
    text->resize(static_cast<size_t>(st.st_size));
    size_t done = 0;
    while (done < text->size()) {
      const ssize_t n = ::read(fd, text->data() + done, text->size() - done);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) {
        rc = n < 0 ? errno : 0;
        break;  // shorter than fstat said (truncated meanwhile): parse what is there
      }
      done += static_cast<size_t>(n);
    }
    text->resize(done);
  }
  ::close(fd);
  return rc;
}

class ProcessEnv final : public Environment {
 public:
  const char* Get(const char* name) const override { return ::getenv(name); }
  std::vector<std::string> DmashimNames() const override {
    std::vector<std::string> names;
    for (char** e = environ; e != nullptr && *e != nullptr; ++e) {
      absl::string_view entry = *e;
      if (!absl::StartsWith(entry, "DMASHIM_")) continue;
      names.emplace_back(entry.substr(0, entry.find('=')));
    }
    return names;
  }
};

}  // namespace

const Environment& ProcessEnvironment() {
  // Never destroyed: the shim may still read it from atexit handlers and other destructors.
  static const ProcessEnv* const env = new ProcessEnv;
  return *env;
}

Config LoadConfigFrom(const Environment& env, bool secure, const std::string& default_path) {
  // In a setuid program not even DMASHIM_CONFIG is read (DESIGN §3.7).
  const char* chosen = secure ? nullptr : env.Get("DMASHIM_CONFIG");
  const bool explicit_path = chosen != nullptr && chosen[0] != '\0';
  config_internal::BuildInput in;
  in.filename = explicit_path ? std::string(chosen) : default_path;
  in.env = secure ? nullptr : &env;
  std::string text, error;
  const int rc = ReadConfigFile(in.filename, secure, &text, &error);
  if (rc == 0) {
    in.path = in.filename;
    in.text = &text;
  } else if (rc != ENOENT || explicit_path) {
    // A missing default file means "no configuration": pure telemetry. Anything else is a line.
    if (error.empty()) error = absl::StrCat("expected a readable file, got ", std::strerror(rc));
    in.load_error =
        absl::StrCat(in.filename, ": ", explicit_path ? "DMASHIM_CONFIG" : "file", ": ", error);
  }
  return config_internal::Build(in);
}

Config LoadConfig(const Environment& env, bool secure) {
  return LoadConfigFrom(env, secure, kDefaultConfigPath);
}

}  // namespace dmashim
