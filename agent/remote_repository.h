// The remote repository: a Whorl cluster reached over gRPC (`--repo whorl://HOST:PORT`). The
// URL names any one metadata shard; from it the agent fetches the cluster map and the
// repository config, then routes every call by the map's consistent-hash rings:
//   FindMissing -> the metadata shard owning each fingerprint (in parallel, batched, with the
//                  shard's Bloom filter answering "certainly absent" without a question);
//   PutChunks   -> the chunk-store node owning each fingerprint (it registers them with their
//                  shards before it acknowledges);
//   GetChunk    -> the owning chunk-store node;
//   CommitSnapshot -> the shard owning the snapshot id; ListSnapshots fans out to all shards.
// A node that answers with a stale-epoch refusal makes the agent refetch the map and redo the
// call; UNAVAILABLE is retried with exponential backoff and jitter; every call has a deadline.
// Errors name the node: "metadata shard meta-2 at 127.0.0.1:7002: ...".
//
// Thread-safety: safe for concurrent use.
#ifndef WHORL_AGENT_REMOTE_REPOSITORY_H_
#define WHORL_AGENT_REMOTE_REPOSITORY_H_

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "agent/repository.h"

namespace whorl::agent {

inline constexpr std::string_view kRemoteScheme = "whorl://";

// Whether `repo` names a cluster (starts with whorl://).
bool IsRemoteUrl(std::string_view repo);

struct RemoteOptions {
  std::string tenant;          // sent with every request; the host name by default
  double call_timeout_s = 60;  // deadline of each call
  int max_attempts = 5;        // for UNAVAILABLE
};

struct ShardStatsRow {
  std::string id;
  std::string address;
  uint64_t unique_chunks = 0;
  uint64_t stored_bytes = 0;
  uint64_t plain_bytes = 0;
  uint64_t snapshots = 0;
  uint64_t logical_bytes = 0;
};

struct ChunkNodeStatsRow {
  std::string id;
  std::string address;
  uint64_t chunks = 0;
  uint64_t stored_bytes = 0;
  uint64_t plain_bytes = 0;
  uint64_t packs = 0;
};

struct TenantStatsRow {
  std::string tenant;
  uint64_t snapshots = 0;
  uint64_t logical_bytes = 0;
};

struct ClusterStats {
  uint64_t epoch = 0;
  RepoStats total;
  std::vector<ShardStatsRow> shards;
  std::vector<ChunkNodeStatsRow> chunk_nodes;
  std::vector<TenantStatsRow> tenants;
};

class RemoteRepository : public Repository {
 public:
  // Statistics of every shard and chunk-store node, and the cluster's totals.
  virtual absl::StatusOr<ClusterStats> AdminStats() = 0;
  // Fingerprints sent to shards by FindMissing so far, and those the Bloom filters answered.
  virtual uint64_t fingerprints_asked() const = 0;
  virtual uint64_t fingerprints_filtered() const = 0;
};

// Stores `config` on every metadata shard of the cluster at `url`. FAILED_PRECONDITION
// "repository already exists" if a shard holds a repository.
absl::Status InitRemoteRepository(const std::string& url, const RepoConfig& config,
                                  const RemoteOptions& options);

// Raises the repository's version on every metadata shard of the cluster at `url` to
// kRepoFormatVersion (Admin.UpgradeRepository: each shard's config with the version changed and
// nothing else). Returns the lowest version a shard held (kRepoFormatVersion: nothing changed).
// A shard whose config is of a version this build does not know, or of another repository, is
// refused before any shard is changed; a shard that fails midway leaves the others raised, and
// running it again finishes the upgrade.
absl::StatusOr<int> UpgradeRemoteRepository(const std::string& url, const RemoteOptions& options);

// Connects to the cluster at `url`. FAILED_PRECONDITION "... is not a whorl repository" if the
// cluster holds no repository yet; UNAVAILABLE naming the node if it cannot be reached.
absl::StatusOr<std::unique_ptr<RemoteRepository>> OpenRemoteRepository(
    const std::string& url, const RemoteOptions& options);

}  // namespace whorl::agent

#endif  // WHORL_AGENT_REMOTE_REPOSITORY_H_
