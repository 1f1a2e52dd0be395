// ThreadSanitizer support for Debian's abseil, linked into every executable of the WHORL_TSAN
// build (cmake/whorl.cmake) and nowhere else.
//
// Why: abseil's Mutex tells TSan about its locks only when abseil itself is compiled with
// -fsanitize=thread. Debian's libabsl_synchronization.so is not, so TSan would not see any
// absl::Mutex (ours, or the ones inside gRPC) as synchronization and would report every access
// to ABSL_GUARDED_BY data as a race. No instrumented abseil can be had here, so this file
// interposes the exported Mutex and CondVar entry points: each wrapper makes the annotation
// calls abseil makes in a TSan build (__tsan_mutex_pre_lock / post_lock / pre_unlock /
// post_unlock) around the real function, found with dlsym(RTLD_NEXT). Symbol names are those of
// abseil 20220623 as Debian 12 builds it (inline namespace "debian3"); if they change, the
// wrappers are simply never called and TSan reports the races again.
#include <dlfcn.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>

extern "C" {
void __tsan_mutex_destroy(void* addr, unsigned flags);
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

#define WHORL_REAL(type, name) static const auto real = Real<type>(#name);

void Lock(void* mu, unsigned flags) { __tsan_mutex_pre_lock(mu, flags); }
void Locked(void* mu, unsigned flags) { __tsan_mutex_post_lock(mu, flags, 0); }
// The mutex is released and taken again inside the call (Await, CondVar::Wait).
void ReleaseForWait(void* mu, unsigned flags) {
  __tsan_mutex_pre_unlock(mu, flags);
  __tsan_mutex_post_unlock(mu, flags);
  __tsan_mutex_pre_lock(mu, flags);
}

}  // namespace

extern "C" {

// absl::Mutex::Lock() / Unlock() / ReaderLock() / ReaderUnlock()
void _ZN4absl7debian35Mutex4LockEv(void* mu) {
  WHORL_REAL(void (*)(void*), _ZN4absl7debian35Mutex4LockEv);
  Lock(mu, 0);
  real(mu);
  Locked(mu, 0);
}
void _ZN4absl7debian35Mutex6UnlockEv(void* mu) {
  WHORL_REAL(void (*)(void*), _ZN4absl7debian35Mutex6UnlockEv);
  __tsan_mutex_pre_unlock(mu, 0);
  real(mu);
  __tsan_mutex_post_unlock(mu, 0);
}
void _ZN4absl7debian35Mutex10ReaderLockEv(void* mu) {
  WHORL_REAL(void (*)(void*), _ZN4absl7debian35Mutex10ReaderLockEv);
  Lock(mu, kReadLock);
  real(mu);
  Locked(mu, kReadLock);
}
void _ZN4absl7debian35Mutex12ReaderUnlockEv(void* mu) {
  WHORL_REAL(void (*)(void*), _ZN4absl7debian35Mutex12ReaderUnlockEv);
  __tsan_mutex_pre_unlock(mu, kReadLock);
  real(mu);
  __tsan_mutex_post_unlock(mu, kReadLock);
}

// absl::Mutex::TryLock() / ReaderTryLock()
bool _ZN4absl7debian35Mutex7TryLockEv(void* mu) {
  WHORL_REAL(bool (*)(void*), _ZN4absl7debian35Mutex7TryLockEv);
  __tsan_mutex_pre_lock(mu, kTryLock);
  const bool ok = real(mu);
  __tsan_mutex_post_lock(mu, kTryLock | (ok ? 0 : kTryLockFailed), 0);
  return ok;
}
bool _ZN4absl7debian35Mutex13ReaderTryLockEv(void* mu) {
  WHORL_REAL(bool (*)(void*), _ZN4absl7debian35Mutex13ReaderTryLockEv);
  __tsan_mutex_pre_lock(mu, kTryLock | kReadLock);
  const bool ok = real(mu);
  __tsan_mutex_post_lock(mu, kTryLock | kReadLock | (ok ? 0 : kTryLockFailed), 0);
  return ok;
}

// absl::Mutex::LockWhen(const Condition&) and its timed forms.
void _ZN4absl7debian35Mutex8LockWhenERKNS0_9ConditionE(void* mu, const void* cond) {
  WHORL_REAL(void (*)(void*, const void*), _ZN4absl7debian35Mutex8LockWhenERKNS0_9ConditionE);
  Lock(mu, 0);
  real(mu, cond);
  Locked(mu, 0);
}
bool _ZN4absl7debian35Mutex19LockWhenWithTimeoutERKNS0_9ConditionENS0_8DurationE(void* mu,
                                                                                 const void* cond,
                                                                                 Duration d) {
  WHORL_REAL(bool (*)(void*, const void*, Duration),
             _ZN4absl7debian35Mutex19LockWhenWithTimeoutERKNS0_9ConditionENS0_8DurationE);
  Lock(mu, 0);
  const bool r = real(mu, cond, d);
  Locked(mu, 0);
  return r;
}
bool _ZN4absl7debian35Mutex20LockWhenWithDeadlineERKNS0_9ConditionENS0_4TimeE(void* mu,
                                                                              const void* cond,
                                                                              Time t) {
  WHORL_REAL(bool (*)(void*, const void*, Time),
             _ZN4absl7debian35Mutex20LockWhenWithDeadlineERKNS0_9ConditionENS0_4TimeE);
  Lock(mu, 0);
  const bool r = real(mu, cond, t);
  Locked(mu, 0);
  return r;
}

// absl::Mutex::Await(const Condition&) and its timed forms: held on entry and on return.
void _ZN4absl7debian35Mutex5AwaitERKNS0_9ConditionE(void* mu, const void* cond) {
  WHORL_REAL(void (*)(void*, const void*), _ZN4absl7debian35Mutex5AwaitERKNS0_9ConditionE);
  ReleaseForWait(mu, 0);
  real(mu, cond);
  Locked(mu, 0);
}
bool _ZN4absl7debian35Mutex16AwaitWithTimeoutERKNS0_9ConditionENS0_8DurationE(void* mu,
                                                                              const void* cond,
                                                                              Duration d) {
  WHORL_REAL(bool (*)(void*, const void*, Duration),
             _ZN4absl7debian35Mutex16AwaitWithTimeoutERKNS0_9ConditionENS0_8DurationE);
  ReleaseForWait(mu, 0);
  const bool r = real(mu, cond, d);
  Locked(mu, 0);
  return r;
}
bool _ZN4absl7debian35Mutex17AwaitWithDeadlineERKNS0_9ConditionENS0_4TimeE(void* mu,
                                                                           const void* cond,
                                                                           Time t) {
  WHORL_REAL(bool (*)(void*, const void*, Time),
             _ZN4absl7debian35Mutex17AwaitWithDeadlineERKNS0_9ConditionENS0_4TimeE);
  ReleaseForWait(mu, 0);
  const bool r = real(mu, cond, t);
  Locked(mu, 0);
  return r;
}

// absl::CondVar::Wait(Mutex*) and its timed forms.
void _ZN4absl7debian37CondVar4WaitEPNS0_5MutexE(void* cv, void* mu) {
  WHORL_REAL(void (*)(void*, void*), _ZN4absl7debian37CondVar4WaitEPNS0_5MutexE);
  ReleaseForWait(mu, 0);
  real(cv, mu);
  Locked(mu, 0);
}
bool _ZN4absl7debian37CondVar15WaitWithTimeoutEPNS0_5MutexENS0_8DurationE(void* cv, void* mu,
                                                                          Duration d) {
  WHORL_REAL(bool (*)(void*, void*, Duration),
             _ZN4absl7debian37CondVar15WaitWithTimeoutEPNS0_5MutexENS0_8DurationE);
  ReleaseForWait(mu, 0);
  const bool r = real(cv, mu, d);
  Locked(mu, 0);
  return r;
}
bool _ZN4absl7debian37CondVar16WaitWithDeadlineEPNS0_5MutexENS0_4TimeE(void* cv, void* mu, Time t) {
  WHORL_REAL(bool (*)(void*, void*, Time),
             _ZN4absl7debian37CondVar16WaitWithDeadlineEPNS0_5MutexENS0_4TimeE);
  ReleaseForWait(mu, 0);
  const bool r = real(cv, mu, t);
  Locked(mu, 0);
  return r;
}

// absl::Mutex::~Mutex(): TSan forgets the lock, so a new Mutex at the same address starts fresh.
void _ZN4absl7debian35MutexD1Ev(void* mu) {
  WHORL_REAL(void (*)(void*), _ZN4absl7debian35MutexD1Ev);
  __tsan_mutex_destroy(mu, 0);
  real(mu);
}
void _ZN4absl7debian35MutexD2Ev(void* mu) {
  WHORL_REAL(void (*)(void*), _ZN4absl7debian35MutexD2Ev);
  __tsan_mutex_destroy(mu, 0);
  real(mu);
}

}  // extern "C"
