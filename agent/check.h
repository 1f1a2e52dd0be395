// Check: verifies a repository's structure (every snapshot's trees and file chunks are in the
// index and in the chunk store, and every pack file is there with a good header and all its
// indexed bytes: Repository::CheckPacks) and, with read_data, every stored chunk's bytes
// against its fingerprint, naming each damaged pack, each damaged chunk and the snapshots and
// files that use it. A chunk is damaged only if kReadAttempts reads of it all fail (see
// ReadChunkRetrying).
#ifndef WHORL_AGENT_CHECK_H_
#define WHORL_AGENT_CHECK_H_

#include <string>
#include <vector>

#include "absl/functional/function_ref.h"
#include "absl/status/statusor.h"
#include "agent/repository.h"

namespace whorl::agent {

struct CheckOptions {
  bool read_data = false;
};

// How often check reads a chunk before it calls it damaged.
inline constexpr int kReadAttempts = 3;

// repo->GetChunk(fp), read again (after 8 ms, then 16 ms) while it fails with anything but
// NOT_FOUND, up to `attempts` reads in all: a read that fails once (an I/O error, a bit flipped
// on the way from the disk or the network) and then succeeds is a transient fault, not damage.
// Returns the last answer.
absl::StatusOr<std::string> ReadChunkRetrying(Repository* repo, const Fingerprint& fp,
                                              int attempts);
// ReadChunkRetrying's retries around Repository::ReadChunk: a failed read is read again, what
// `use` returns is returned at once (it was called: the read succeeded).
absl::Status ReadChunkRetrying(Repository* repo, const Fingerprint& fp, int attempts,
                               absl::FunctionRef<absl::Status(std::string_view)> use);

// What RunCheck found besides its problem lines.
struct CheckDetails {
  // The chunks and trees that cannot be read: referenced but missing from the chunk store, in a
  // damaged pack's lost bytes, or (read_data) failing every read. What `whorl repair` forgets.
  std::vector<Fingerprint> damaged;
  // Damage that loses no chunk the store still locates (a damaged pack whose lost chunks a
  // repair forgot): reported, not an error.
  std::vector<std::string> notes;
};

// Returns one line per problem found (empty: the repository is sound) and, if `details` is not
// null, fills it. Fails only if the repository cannot be read at all.
absl::StatusOr<std::vector<std::string>> RunCheck(Repository* repo, const CheckOptions& options,
                                                  CheckDetails* details = nullptr);

}  // namespace whorl::agent

#endif  // WHORL_AGENT_CHECK_H_
