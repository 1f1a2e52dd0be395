// Mutex checking for a Release build, set first thing in each binary's main.
#ifndef WHORL_COMMON_MUTEX_MODE_H_
#define WHORL_COMMON_MUTEX_MODE_H_

#include "absl/synchronization/mutex.h"

namespace whorl {

// Debian 12's libabsl is built without NDEBUG, so its Mutex runs deadlock detection on every
// lock: each thread's held locks recorded and a process-wide lock graph updated under one
// spinlock (0.7% of a restore's samples in DeadlockCheck and GetGraphId alone, and a point of
// contention between the pipeline's threads). Release builds turn it off; Debug, ASan and TSan
// builds (the tests in CI) keep it.
inline void UseReleaseMutexChecks() {
#ifdef NDEBUG
  absl::SetMutexDeadlockDetectionMode(absl::OnDeadlockCycle::kIgnore);
#endif
}

}  // namespace whorl

#endif  // WHORL_COMMON_MUTEX_MODE_H_
