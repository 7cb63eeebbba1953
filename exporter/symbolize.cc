#include "exporter/symbolize.h"

#include <cxxabi.h>
#include <elf.h>
#include <fcntl.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <fstream>
#include <sstream>

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "exporter/segment_reader.h"

namespace dmashim {
namespace {

constexpr uint64_t kMaxElfBytes = uint64_t{512} << 20;

bool ReadFile(const std::string& path, std::string* out) {
  int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOCTTY);
  if (fd < 0) return false;
  struct stat st;
  bool ok = fstat(fd, &st) == 0 && S_ISREG(st.st_mode) && st.st_size > 0 &&
            static_cast<uint64_t>(st.st_size) <= kMaxElfBytes;
  if (ok) {
    out->resize(static_cast<size_t>(st.st_size));
    size_t done = 0;
    while (done < out->size()) {
      ssize_t r = read(fd, out->data() + done, out->size() - done);
      if (r <= 0) break;
      done += static_cast<size_t>(r);
    }
    out->resize(done);
  }
  close(fd);
  return ok;
}

// A bounds-checked view of the file's bytes.
template <typename T>
bool At(const std::string& f, uint64_t off, T* out) {
  if (off > f.size() || f.size() - off < sizeof(T)) return false;
  memcpy(out, f.data() + off, sizeof(T));
  return true;
}

std::string Demangle(const std::string& name) {
  int status = -1;
  char* d = abi::__cxa_demangle(name.c_str(), nullptr, nullptr, &status);
  std::string out = status == 0 && d != nullptr ? d : name;
  free(d);
  return out;
}

}  // namespace

std::vector<MappedObject> ParseMaps(absl::string_view text) {
  std::vector<MappedObject> out;
  for (absl::string_view line : absl::StrSplit(text, '\n', absl::SkipEmpty())) {
    // start-end perms offset dev inode path
    std::vector<absl::string_view> f = absl::StrSplit(line, absl::MaxSplits(' ', 5));
    if (f.size() < 6) continue;
    absl::string_view path = absl::StripLeadingAsciiWhitespace(f[5]);
    if (path.empty() || path[0] != '/') continue;  // [heap], [stack], anonymous
    std::pair<absl::string_view, absl::string_view> range = absl::StrSplit(f[0], '-');
    MappedObject m;
    if (!absl::SimpleHexAtoi(range.first, &m.start) || !absl::SimpleHexAtoi(range.second, &m.end) ||
        !absl::SimpleHexAtoi(f[2], &m.offset) || m.end <= m.start)
      continue;
    m.path = std::string(path);
    out.push_back(std::move(m));
  }
  return out;
}

std::unique_ptr<ElfSymbols> ElfSymbols::Load(const std::string& path) {
  std::string f;
  if (!ReadFile(path, &f)) return nullptr;
  Elf64_Ehdr eh;
  if (!At(f, 0, &eh) || memcmp(eh.e_ident, ELFMAG, SELFMAG) != 0 ||
      eh.e_ident[EI_CLASS] != ELFCLASS64 || eh.e_ident[EI_DATA] != ELFDATA2LSB)
    return nullptr;
  auto elf = std::unique_ptr<ElfSymbols>(new ElfSymbols);
  if (eh.e_phentsize == sizeof(Elf64_Phdr)) {
    for (uint32_t i = 0; i < eh.e_phnum; ++i) {
      Elf64_Phdr ph;
      if (!At(f, eh.e_phoff + uint64_t{i} * sizeof ph, &ph)) break;
      if (ph.p_type == PT_LOAD) elf->segs_.push_back({ph.p_offset, ph.p_filesz, ph.p_vaddr});
    }
  }
  if (eh.e_shentsize != sizeof(Elf64_Shdr) || eh.e_shnum == 0) return elf;
  std::vector<Elf64_Shdr> sh(eh.e_shnum);
  for (uint32_t i = 0; i < eh.e_shnum; ++i)
    if (!At(f, eh.e_shoff + uint64_t{i} * sizeof(Elf64_Shdr), &sh[i])) return elf;
  // .symtab (every function, if not stripped) first; .dynsym (exported ones) otherwise.
  for (uint32_t want : {uint32_t{SHT_SYMTAB}, uint32_t{SHT_DYNSYM}}) {
    for (const Elf64_Shdr& s : sh) {
      if (s.sh_type != want || s.sh_entsize != sizeof(Elf64_Sym) || s.sh_link >= sh.size()) continue;
      const Elf64_Shdr& str = sh[s.sh_link];
      if (str.sh_offset > f.size() || f.size() - str.sh_offset < str.sh_size) continue;
      const uint64_t n = s.sh_size / sizeof(Elf64_Sym);
      for (uint64_t i = 0; i < n; ++i) {
        Elf64_Sym sym;
        if (!At(f, s.sh_offset + i * sizeof sym, &sym)) break;
        if (ELF64_ST_TYPE(sym.st_info) != STT_FUNC || sym.st_value == 0 || sym.st_name >= str.sh_size)
          continue;
        const char* name = f.data() + str.sh_offset + sym.st_name;
        const size_t len = strnlen(name, str.sh_size - sym.st_name);
        elf->syms_.push_back({sym.st_value, sym.st_size, std::string(name, len)});
      }
    }
    if (!elf->syms_.empty()) break;
  }
  std::sort(elf->syms_.begin(), elf->syms_.end(),
            [](const Sym& a, const Sym& b) { return a.addr < b.addr; });
  return elf;
}

bool ElfSymbols::FileOffsetToVaddr(uint64_t off, uint64_t* vaddr) const {
  for (const Seg& s : segs_) {
    if (off >= s.offset && off - s.offset < s.filesz) {
      *vaddr = s.vaddr + (off - s.offset);
      return true;
    }
  }
  return false;
}

std::string ElfSymbols::FunctionAt(uint64_t vaddr, uint64_t* offset_in_function) const {
  auto it = std::upper_bound(syms_.begin(), syms_.end(), vaddr,
                             [](uint64_t v, const Sym& s) { return v < s.addr; });
  // Walk back over symbols at the same address range (aliases); take one that covers vaddr.
  while (it != syms_.begin()) {
    --it;
    if (vaddr >= it->addr && (vaddr - it->addr < it->size || (it->size == 0 && vaddr == it->addr))) {
      *offset_in_function = vaddr - it->addr;
      return Demangle(it->name);
    }
    if (vaddr - it->addr > (uint64_t{1} << 24)) break;  // far behind: nothing covers it
  }
  return "";
}

std::string Frame::ToString() const {
  const std::string base = object.substr(object.rfind('/') + 1);
  if (!function.empty()) return absl::StrFormat("%s+0x%x (%s)", function, function_offset, base);
  if (!object.empty()) return absl::StrFormat("%s+0x%x", base, object_offset);
  return absl::StrFormat("0x%x", pc);
}

Symbolizer::Symbolizer(int32_t pid, uint64_t start_time_ticks, absl::string_view proc_root) {
  if (!ProcessAlive(pid, start_time_ticks, proc_root)) return;
  std::ifstream in(absl::StrCat(proc_root, "/", pid, "/maps"));
  if (!in) return;
  std::stringstream buf;
  buf << in.rdbuf();
  maps_ = ParseMaps(buf.str());
  // The pid could have been reused between the check and the read.
  if (!ProcessAlive(pid, start_time_ticks, proc_root)) maps_.clear();
}

Frame Symbolizer::Lookup(uint64_t pc) {
  Frame fr;
  fr.pc = pc;
  const uint64_t at = pc > 0 ? pc - 1 : pc;
  for (const MappedObject& m : maps_) {
    if (at < m.start || at >= m.end) continue;
    fr.object = m.path;
    const uint64_t file_off = at - m.start + m.offset;
    fr.object_offset = file_off + (pc - at);
    auto [it, inserted] = files_.try_emplace(m.path);
    if (inserted) it->second = ElfSymbols::Load(m.path);
    uint64_t vaddr = 0;
    if (it->second != nullptr && it->second->FileOffsetToVaddr(file_off, &vaddr)) {
      fr.object_offset = vaddr + (pc - at);  // offsets name the return address, as dladdr's do
      uint64_t off = 0;
      fr.function = it->second->FunctionAt(vaddr, &off);
      fr.function_offset = off + (pc - at);  // report the return address's offset
    }
    break;
  }
  return fr;
}

}  // namespace dmashim
