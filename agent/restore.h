// Restore: writes a snapshot's files under a target directory, each backed-up path at its
// absolute path below the target (as restic does: /home/x restored to /r is /r/home/x).
//
// Safety (design.md invariant 4): every entry is created relative to an open directory fd with
// O_NOFOLLOW (and the *at calls with AT_SYMLINK_NOFOLLOW), so restore never follows a symlink,
// whether it restored it or found it in the target. Each tree entry is checked on its own and
// refused ("PATH: refused: reason") if its name is unsafe ("", ".", "..", '/' or NUL in it),
// its name occurs twice in its directory (all entries of that name are refused), its type or
// fingerprints are malformed, its directory refers back to a tree above it, the trees nest
// deeper than 512, or it is a device node without `devices`; everything else is restored.
// Every chunk is verified against its fingerprint; a file with a damaged chunk, or whose
// chunks do not add up to its size, is removed and reported. `whorl restore` exits 1 if
// anything was refused or failed, having restored the rest.
#ifndef WHORL_AGENT_RESTORE_H_
#define WHORL_AGENT_RESTORE_H_

#include <functional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "agent/repository.h"

namespace whorl::agent {

struct RestoreOptions {
  std::string target;
  std::vector<std::string> includes;  // absolute snapshot paths; empty: everything
  // Create character and block device nodes (only as root). Default: false, and each device
  // node is refused: a hostile snapshot must not hand out raw access to a disk.
  bool devices = false;
};

struct RestoreResult {
  uint64_t files = 0;
  uint64_t bytes = 0;
  // "PATH: reason" for each item not restored; PATH has unprintable bytes as \xNN. An entry
  // the snapshot should not hold is "PATH: refused: reason".
  std::vector<std::string> errors;
  uint64_t refused = 0;  // how many of `errors` are refusals
};

// Fails only when nothing can be restored (the target is not a directory, the root tree is
// unreadable); per-item failures are in `errors` (and passed to `on_error` as they happen).
absl::StatusOr<RestoreResult> RunRestore(Repository* repo, const v1::Snapshot& snapshot,
                                         const RestoreOptions& options,
                                         const std::function<void(const std::string&)>& on_error);

}  // namespace whorl::agent

#endif  // WHORL_AGENT_RESTORE_H_
