// Diagnostics: one line at a time to stderr with write(2) — no stdio buffers, no locks, safe from
// any hook. Messages start with "dmashim: ".
#pragma once

#include <string>

#include "absl/strings/string_view.h"

namespace dmashim {

void DiagLine(absl::string_view line);

}  // namespace dmashim
