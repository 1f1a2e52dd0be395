// Restore: writes a snapshot's files under a target directory, each backed-up path at its
// absolute path below the target (as restic does: /home/x restored to /r is /r/home/x).
//
// Safety (design.md invariant 4): every entry is created relative to an open directory fd with
// O_NOFOLLOW, so restore never follows a symlink, whether it restored it or found it in the
// target; tree names are validated when decoded. Every chunk is verified against its
// fingerprint; a file with a damaged chunk is removed and reported, the others are restored.
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
};

struct RestoreResult {
  uint64_t files = 0;
  uint64_t bytes = 0;
  std::vector<std::string> errors;  // "PATH: reason" for each item not restored
};

// Fails only when nothing can be restored (the target is not a directory, the root tree is
// unreadable); per-item failures are in `errors` (and passed to `on_error` as they happen).
absl::StatusOr<RestoreResult> RunRestore(Repository* repo, const v1::Snapshot& snapshot,
                                         const RestoreOptions& options,
                                         const std::function<void(const std::string&)>& on_error);

}  // namespace whorl::agent

#endif  // WHORL_AGENT_RESTORE_H_
