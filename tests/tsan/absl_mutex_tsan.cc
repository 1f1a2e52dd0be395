// ThreadSanitizer support for Debian's abseil, linked into every executable of the WHORL_TSAN
// build (cmake/whorl.cmake) and nowhere else.
//
// Why: abseil's Mutex tells TSan about its locks only when abseil itself is compiled with
// -fsanitize=thread. Debian's libabsl_synchronization.so is not, so TSan would not see any
// absl::Mutex (ours, or the ones inside gRPC) as synchronization and would report every access
// to ABSL_GUARDED_BY data as a race. No instrumented abseil can be had here, so this file
// interposes the exported Mutex and CondVar entry points: each wrapper makes the annotation
// calls abseil makes in a TSan build (__tsan_mutex_pre_lock / post_lock / pre_unlock /
// post_unlock) around the real function, found with dlsym(RTLD_NEXT). ~Mutex is left alone:
// TSan forgets a lock when its memory is freed. Symbol names are those of
// abseil 20220623 as Debian 12 builds it (inline namespace "debian3"); if they change, the
// wrappers are simply never called and TSan reports the races again.
#include <dlfcn.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <type_traits>

extern "C" {
void __tsan_mutex_pre_lock(void* addr, unsigned flags);
void __tsan_mutex_post_lock(void* addr, unsigned flags, int recursion);
int __tsan_mutex_pre_unlock(void* addr, unsigned flags);
void __tsan_mutex_post_unlock(void* addr, unsigned flags);
}

namespace {

// Flags of tsan_interface.h (sanitizer/tsan_interface.h in GCC and clang).
constexpr unsigned kReadLock = 1 << 3;
constexpr unsigned kTryLock = 1 << 4;
constexpr unsigned kTryLockFailed = 1 << 5;

// absl::Duration and absl::Time passed by value: two words, as in abseil's own layout.
struct Duration {
  int64_t hi;
  uint32_t lo;
};
struct Time {
  Duration rep;
};

template <typename Fn>
Fn Real(const char* name) {
  void* f = dlsym(RTLD_NEXT, name);
  if (f == nullptr) {
    std::fprintf(stderr, "absl_mutex_tsan: %s not found\n", name);
    std::abort();
  }
  return reinterpret_cast<Fn>(f);
}

// abseil's entry points call one another (WaitWithTimeout calls WaitWithDeadline through the
// PLT, hence our wrapper again): only the outermost call on a thread annotates.
thread_local int depth = 0;
struct Nesting {
  Nesting() : outer(depth++ == 0) {}
  ~Nesting() { --depth; }
  const bool outer;
};

// How a wrapped call uses its mutex.
enum class Kind { kLock, kReaderLock, kUnlock, kReaderUnlock, kTryLock, kReaderTryLock, kWait };

void Before(Kind kind, void* mu) {
  switch (kind) {
    case Kind::kLock:
      __tsan_mutex_pre_lock(mu, 0);
      break;
    case Kind::kReaderLock:
      __tsan_mutex_pre_lock(mu, kReadLock);
      break;
    case Kind::kUnlock:
      __tsan_mutex_pre_unlock(mu, 0);
      break;
    case Kind::kReaderUnlock:
      __tsan_mutex_pre_unlock(mu, kReadLock);
      break;
    case Kind::kTryLock:
      __tsan_mutex_pre_lock(mu, kTryLock);
      break;
    case Kind::kReaderTryLock:
      __tsan_mutex_pre_lock(mu, kTryLock | kReadLock);
      break;
    case Kind::kWait:  // held on entry and on return, released and taken again inside
      __tsan_mutex_pre_unlock(mu, 0);
      __tsan_mutex_post_unlock(mu, 0);
      __tsan_mutex_pre_lock(mu, 0);
      break;
  }
}

void After(Kind kind, void* mu, bool ok) {
  switch (kind) {
    case Kind::kLock:
    case Kind::kWait:
      __tsan_mutex_post_lock(mu, 0, 0);
      break;
    case Kind::kReaderLock:
      __tsan_mutex_post_lock(mu, kReadLock, 0);
      break;
    case Kind::kUnlock:
      __tsan_mutex_post_unlock(mu, 0);
      break;
    case Kind::kReaderUnlock:
      __tsan_mutex_post_unlock(mu, kReadLock);
      break;
    case Kind::kTryLock:
      __tsan_mutex_post_lock(mu, kTryLock | (ok ? 0 : kTryLockFailed), 0);
      break;
    case Kind::kReaderTryLock:
      __tsan_mutex_post_lock(mu, kTryLock | kReadLock | (ok ? 0 : kTryLockFailed), 0);
      break;
  }
}

// Calls `real` on (mu, args...) between the annotations for `kind`; `mu` is the mutex.
template <typename R, typename... Args>
R Wrap(Kind kind, void* mu, R (*real)(Args...), Args... args) {
  Nesting nesting;
  if (!nesting.outer) return real(args...);
  Before(kind, mu);
  if constexpr (std::is_void_v<R>) {
    real(args...);
    After(kind, mu, true);
  } else {
    const R r = real(args...);
    After(kind, mu, static_cast<bool>(r));
    return r;
  }
}

}  // namespace

// One wrapper per exported entry point: NAME is the mangled symbol, the real one is looked up
// once.
#define WHORL_WRAP(RET, NAME, KIND, MU, PARAMS, TYPES, ...) \
  extern "C" RET NAME PARAMS {                              \
    static const auto real = Real<RET(*) TYPES>(#NAME);     \
    return Wrap<RET>(KIND, MU, real, __VA_ARGS__);          \
  }

using Cond = const void*;  // const absl::Condition&

// absl::Mutex::Lock(), Unlock(), ReaderLock(), ReaderUnlock(), TryLock(), ReaderTryLock()
WHORL_WRAP(void, _ZN4absl7debian35Mutex4LockEv, Kind::kLock, m, (void* m), (void*), m)
WHORL_WRAP(void, _ZN4absl7debian35Mutex6UnlockEv, Kind::kUnlock, m, (void* m), (void*), m)
WHORL_WRAP(void, _ZN4absl7debian35Mutex10ReaderLockEv, Kind::kReaderLock, m, (void* m), (void*), m)
WHORL_WRAP(void, _ZN4absl7debian35Mutex12ReaderUnlockEv, Kind::kReaderUnlock, m, (void* m), (void*),
           m)
WHORL_WRAP(bool, _ZN4absl7debian35Mutex7TryLockEv, Kind::kTryLock, m, (void* m), (void*), m)
WHORL_WRAP(bool, _ZN4absl7debian35Mutex13ReaderTryLockEv, Kind::kReaderTryLock, m, (void* m),
           (void*), m)
// absl::Mutex::LockWhen(const Condition&) and its timed forms.
WHORL_WRAP(void, _ZN4absl7debian35Mutex8LockWhenERKNS0_9ConditionE, Kind::kLock, m,
           (void* m, Cond c), (void*, Cond), m, c)
WHORL_WRAP(bool, _ZN4absl7debian35Mutex19LockWhenWithTimeoutERKNS0_9ConditionENS0_8DurationE,
           Kind::kLock, m, (void* m, Cond c, Duration d), (void*, Cond, Duration), m, c, d)
WHORL_WRAP(bool, _ZN4absl7debian35Mutex20LockWhenWithDeadlineERKNS0_9ConditionENS0_4TimeE,
           Kind::kLock, m, (void* m, Cond c, Time t), (void*, Cond, Time), m, c, t)
// absl::Mutex::Await(const Condition&) and its timed forms.
WHORL_WRAP(void, _ZN4absl7debian35Mutex5AwaitERKNS0_9ConditionE, Kind::kWait, m, (void* m, Cond c),
           (void*, Cond), m, c)
WHORL_WRAP(bool, _ZN4absl7debian35Mutex16AwaitWithTimeoutERKNS0_9ConditionENS0_8DurationE,
           Kind::kWait, m, (void* m, Cond c, Duration d), (void*, Cond, Duration), m, c, d)
WHORL_WRAP(bool, _ZN4absl7debian35Mutex17AwaitWithDeadlineERKNS0_9ConditionENS0_4TimeE, Kind::kWait,
           m, (void* m, Cond c, Time t), (void*, Cond, Time), m, c, t)
// absl::CondVar::Wait(Mutex*) and its timed forms: the mutex is the second argument.
WHORL_WRAP(void, _ZN4absl7debian37CondVar4WaitEPNS0_5MutexE, Kind::kWait, m, (void* cv, void* m),
           (void*, void*), cv, m)
WHORL_WRAP(bool, _ZN4absl7debian37CondVar15WaitWithTimeoutEPNS0_5MutexENS0_8DurationE, Kind::kWait,
           m, (void* cv, void* m, Duration d), (void*, void*, Duration), cv, m, d)
WHORL_WRAP(bool, _ZN4absl7debian37CondVar16WaitWithDeadlineEPNS0_5MutexENS0_4TimeE, Kind::kWait, m,
           (void* cv, void* m, Time t), (void*, void*, Time), cv, m, t)
