// Named kill points for crash tests (the way RocksDB's whitebox crash test uses TEST_KILL_RANDOM).
//
// WHORL_KILL_POINT("pack.fdatasync.after") marks a durability step. When the environment
// variable WHORL_KILL_POINT names that point when the process starts, the process dies with
// raise(SIGKILL) at the point, after writing "whorl: kill point NAME: SIGKILL" to stderr; a test
// then restarts it and proves that nothing acknowledged was lost. Names and what each step has
// made durable are listed in common/kill_points.md.
//
//   WHORL_KILL_POINT=NAME            die at the first hit of NAME
//   WHORL_KILL_POINT_SKIP=N          ... at the (N+1)-th hit instead (default 0)
//   WHORL_KILL_POINT=random:P        die at any point with probability P (0 < P <= 1) per hit,
//   WHORL_KILL_SEED=S                drawn from a generator seeded with S (default: from the pid
//                                    and the clock)
//
// Always compiled in, in every build type, so CI needs no separate build: with the variable
// unset a point costs one predictable branch on a bool read once at start-up. The variables are
// read by a static initializer, so a point must not be reached before main().
//
// Thread-safe: points may be hit from any thread.
#ifndef WHORL_COMMON_KILL_POINT_H_
#define WHORL_COMMON_KILL_POINT_H_

namespace whorl::kill_point_internal {

// True when WHORL_KILL_POINT is set to something; fixed before main().
extern bool g_armed;
// Counts the hit and dies if `name` is the armed point (or the random draw says so).
void Hit(const char* name);

}  // namespace whorl::kill_point_internal

#define WHORL_KILL_POINT(name)                                            \
  do {                                                                    \
    if (__builtin_expect(::whorl::kill_point_internal::g_armed, false)) { \
      ::whorl::kill_point_internal::Hit(name);                            \
    }                                                                     \
  } while (0)

#endif  // WHORL_COMMON_KILL_POINT_H_
