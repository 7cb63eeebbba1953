// Between the parser (config.cc) and the loader (config_load.cc): one entry point that turns a
// file's text and the environment into a checked Config. Not for the rest of the shim.
#pragma once

#include <string>

#include "shim/config.h"

namespace dmashim::config_internal {

struct BuildInput {
  std::string path;                   // becomes Config::path: the file read, or ""
  std::string filename;               // names the file in messages
  const std::string* text = nullptr;  // the file's text; null when there is none
  const Environment* env = nullptr;   // overrides to apply; null in secure mode and ParseConfig
  std::string load_error;             // a whole message line when the file could not be used
};

// Parses, applies the overrides, derives each pool's source and element size and checks the rules
// that span keys. Never throws: out of memory becomes an error line.
Config Build(const BuildInput& in);

}  // namespace dmashim::config_internal
