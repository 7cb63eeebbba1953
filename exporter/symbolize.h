// Symbolizing call-site program counters recorded by the shim (the shim stores raw return
// addresses; naming them is the reader's job). A process's /proc/<pid>/maps says which file each
// address belongs to and at what offset; the file's ELF symbol tables (.symtab, else .dynsym) say
// which function holds it. Every file read here is treated as untrusted: all offsets and sizes are
// bounds-checked, a file that does not parse just yields no names.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/string_view.h"

namespace dmashim {

// One executable mapping of /proc/<pid>/maps.
struct MappedObject {
  uint64_t start = 0, end = 0, offset = 0;
  std::string path;
};

// Parses the text of a maps file; keeps file-backed mappings only.
std::vector<MappedObject> ParseMaps(absl::string_view text);

// Function symbols of one ELF file, and its loadable segments (file offset -> virtual address).
class ElfSymbols {
 public:
  // Reads `path` (at most 512 MiB). Returns null when it is not a 64-bit ELF file we can read.
  static std::unique_ptr<ElfSymbols> Load(const std::string& path);
  // The function containing the virtual address `vaddr`, demangled; empty if none.
  std::string FunctionAt(uint64_t vaddr, uint64_t* offset_in_function) const;
  // The virtual address of file offset `off`, or false when no PT_LOAD segment holds it.
  bool FileOffsetToVaddr(uint64_t off, uint64_t* vaddr) const;

 private:
  struct Sym {
    uint64_t addr, size;
    std::string name;
  };
  struct Seg {
    uint64_t offset, filesz, vaddr;
  };
  std::vector<Sym> syms_;  // sorted by addr
  std::vector<Seg> segs_;
};

struct Frame {
  uint64_t pc = 0;
  std::string function;  // demangled; empty when unknown
  uint64_t function_offset = 0;
  std::string object;  // the file's path; empty when unknown
  uint64_t object_offset = 0;
  // "func+0x1c (prog)", "prog+0x1234" or "0x7f…" (nothing known).
  std::string ToString() const;
};

class Symbolizer {
 public:
  // Uses /proc/<pid>/maps when the process still runs with this start time (else nothing is
  // known and frames are raw addresses). `proc_root` is "/proc" except in tests.
  Symbolizer(int32_t pid, uint64_t start_time_ticks, absl::string_view proc_root = "/proc");
  // From given mappings (tests).
  explicit Symbolizer(std::vector<MappedObject> maps) : maps_(std::move(maps)) {}

  bool has_maps() const { return !maps_.empty(); }
  // `pc` is a return address: the function looked up is the one holding pc - 1.
  Frame Lookup(uint64_t pc);

 private:
  std::vector<MappedObject> maps_;
  std::map<std::string, std::unique_ptr<ElfSymbols>> files_;
};

}  // namespace dmashim
