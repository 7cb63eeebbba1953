#include "shim/diag.h"

#include <errno.h>
#include <unistd.h>

#include <string>

namespace dmashim {

void DiagLine(absl::string_view line) {
  const int saved = errno;
  std::string buf(line);
  buf.push_back('\n');
  size_t off = 0;
  while (off < buf.size()) {
    ssize_t n = write(STDERR_FILENO, buf.data() + off, buf.size() - off);
    if (n <= 0) break;
    off += static_cast<size_t>(n);
  }
  errno = saved;
}

}  // namespace dmashim
