#include "pools/stats.h"

#include <string.h>

namespace dmashim {

void InitPoolStats(PoolStats* s, const char* name, PoolKind kind, uint32_t mode,
                   uint64_t element_size) {
  memset(static_cast<void*>(s), 0, sizeof *s);
  strncpy(s->name, name, kPoolNameMax - 1);
  s->kind = static_cast<uint32_t>(kind);
  s->mode = mode;
  s->element_size = element_size;
}

}  // namespace dmashim
