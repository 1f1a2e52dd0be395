// Resolves a SNAP argument: a full 64-hex id, a unique prefix of at least 8 hex digits, or
// "latest" (newest of `host` if not empty, else of all hosts).
#ifndef WHORL_AGENT_SNAPSHOT_SELECT_H_
#define WHORL_AGENT_SNAPSHOT_SELECT_H_

#include <string>

#include "absl/status/statusor.h"
#include "agent/repository.h"

namespace whorl::agent {

// NOT_FOUND "no snapshot matches ..." / INVALID_ARGUMENT for a short or non-hex prefix /
// FAILED_PRECONDITION "... is ambiguous" when several match.
absl::StatusOr<metadata::SnapshotRecord> SelectSnapshot(Repository* repo, const std::string& spec,
                                                        const std::string& host);

}  // namespace whorl::agent

#endif  // WHORL_AGENT_SNAPSHOT_SELECT_H_
