// TSan builds only (DMASHIM_SANITIZE=thread): makes absl::Mutex visible to ThreadSanitizer.
//
// Debian's Abseil is a prebuilt shared library without TSan instrumentation, so TSan never sees
// absl::Mutex::Lock/Unlock synchronize and reports every access guarded by one as a data race.
// Linked into every target of a TSan build, these definitions take the place of the library's
// (the executable's symbol wins), call the real ones through dlsym(RTLD_NEXT), and tell TSan about
// the acquire/release. dmashim uses only Lock/Unlock (directly and through absl::MutexLock).
#include <dlfcn.h>
#include <sanitizer/tsan_interface.h>
#include <stdlib.h>

#include <atomic>
#include <string>

#include "absl/base/config.h"
#include "absl/synchronization/mutex.h"

namespace {

using Method = void (*)(absl::Mutex*);

#define DMASHIM_STR2(x) #x
#define DMASHIM_STR(x) DMASHIM_STR2(x)

Method Real(const char* method) {
  // _ZN4absl<len><inline namespace>5Mutex<len><method>Ev
#ifdef ABSL_OPTION_INLINE_NAMESPACE_NAME
  const std::string ns = DMASHIM_STR(ABSL_OPTION_INLINE_NAMESPACE_NAME);
  const std::string name = "_ZN4absl" + std::to_string(ns.size()) + ns + "5Mutex" +
                           std::to_string(std::string(method).size()) + method + "Ev";
#else
  const std::string name = std::string("_ZN4absl5Mutex") +
                           std::to_string(std::string(method).size()) + method + "Ev";
#endif
  void* f = dlsym(RTLD_NEXT, name.c_str());
  if (f == nullptr) abort();
  return reinterpret_cast<Method>(f);
}

std::atomic<Method> g_lock{nullptr}, g_unlock{nullptr};

}  // namespace

namespace absl {
ABSL_NAMESPACE_BEGIN

void Mutex::Lock() {
  Method f = g_lock.load(std::memory_order_acquire);
  if (f == nullptr) g_lock.store(f = Real("Lock"), std::memory_order_release);
  f(this);
  __tsan_acquire(this);
}

void Mutex::Unlock() {
  Method f = g_unlock.load(std::memory_order_acquire);
  if (f == nullptr) g_unlock.store(f = Real("Unlock"), std::memory_order_release);
  __tsan_release(this);
  f(this);
}

ABSL_NAMESPACE_END
}  // namespace absl
