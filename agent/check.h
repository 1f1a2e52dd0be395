// Check: verifies a repository's structure (every snapshot's trees and file chunks are in the
// index and in the chunk store) and, with read_data, every stored chunk's bytes against its
// fingerprint, naming each damaged chunk and the snapshots and files that use it.
#ifndef WHORL_AGENT_CHECK_H_
#define WHORL_AGENT_CHECK_H_

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "agent/repository.h"

namespace whorl::agent {

struct CheckOptions {
  bool read_data = false;
};

// Returns one line per problem found (empty: the repository is sound). Fails only if the
// repository cannot be read at all.
absl::StatusOr<std::vector<std::string>> RunCheck(Repository* repo, const CheckOptions& options);

}  // namespace whorl::agent

#endif  // WHORL_AGENT_CHECK_H_
