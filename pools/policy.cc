#include "pools/policy.h"

#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"

namespace dmashim {

absl::StatusOr<WaitPolicy> ParseMode(absl::string_view text) {
  WaitPolicy p;
  if (text == "block") {
    p.mode = Mode::kBlock;
    return p;
  }
  if (text == "fail-fast") {
    p.mode = Mode::kFailFast;
    return p;
  }
  absl::string_view rest = text;
  if (absl::ConsumePrefix(&rest, "timeout:")) {
    absl::Duration d;
    if (!absl::ParseDuration(rest, &d) || d <= absl::ZeroDuration() || d == absl::InfiniteDuration()) {
      return absl::InvalidArgumentError(absl::StrCat(
          "expected a positive duration after \"timeout:\" such as \"50ms\" or \"2s\", got \"",
          rest, "\""));
    }
    p.mode = Mode::kTimeout;
    p.timeout = d;
    return p;
  }
  return absl::InvalidArgumentError(absl::StrCat(
      "expected \"block\", \"fail-fast\" or \"timeout:<duration>\", got \"", text, "\""));
}

absl::StatusOr<ZeroMode> ParseZeroMode(absl::string_view text) {
  if (text == "eager") return ZeroMode::kEager;
  if (text == "background") return ZeroMode::kBackground;
  if (text == "none") return ZeroMode::kNone;
  return absl::InvalidArgumentError(
      absl::StrCat("expected \"eager\", \"background\" or \"none\", got \"", text, "\""));
}

absl::string_view ModeName(Mode mode) {
  switch (mode) {
    case Mode::kBlock:
      return "block";
    case Mode::kTimeout:
      return "timeout";
    case Mode::kFailFast:
      return "fail-fast";
  }
  return "unknown";
}

std::string FormatMode(const WaitPolicy& policy) {
  if (policy.mode == Mode::kTimeout) {
    return absl::StrCat("timeout:", absl::FormatDuration(policy.timeout));
  }
  return std::string(ModeName(policy.mode));
}

absl::string_view ZeroModeName(ZeroMode zero) {
  switch (zero) {
    case ZeroMode::kEager:
      return "eager";
    case ZeroMode::kBackground:
      return "background";
    case ZeroMode::kNone:
      return "none";
  }
  return "unknown";
}

}  // namespace dmashim
