// The cluster map: which metadata shards and chunk-store nodes make up a cluster, where they
// listen, their weights on the two hash rings, and the epoch that versions the whole list.
// It is a small JSON document (spec: common/cluster_map_format.md); metadata nodes serve it to
// agents, and a routed request carries the caller's epoch so a stale map is caught by the server.
//
//   WHORL_ASSIGN_OR_RETURN(ClusterMap map, LoadClusterMap("/etc/whorl/cluster.json"));
//   WHORL_ASSIGN_OR_RETURN(HashRing shards, map.MetadataRing());
//   const ClusterNode& shard = map.metadata[shards.OwnerIndex(fingerprint.Prefix64())];
#ifndef WHORL_COMMON_CLUSTER_MAP_H_
#define WHORL_COMMON_CLUSTER_MAP_H_

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "common/hash_ring.h"

namespace whorl {

// One metadata shard or chunk-store node.
struct ClusterNode {
  std::string id;       // 1-128 of [A-Za-z0-9._-]; unique across both lists.
  std::string address;  // "HOST:PORT" or "[IPv6]:PORT", port 1-65535.
  int weight = 1;       // Share of its ring, 1..kMaxWeight.

  friend bool operator==(const ClusterNode&, const ClusterNode&) = default;
};

// A parsed cluster map. A plain value: copy it freely; no internal synchronization.
struct ClusterMap {
  static constexpr int kFormat = 1;           // The only "format" this build reads and writes.
  static constexpr int kMaxWeight = 1 << 16;  // Larger weights are refused as typos.
  static constexpr size_t kMaxFileSize = size_t{1} << 20;  // LoadClusterMap's cap: 1 MiB.

  uint64_t epoch = 0;  // Bumped by the operator on every change.
  // Virtual nodes per unit of weight on both rings. Placement depends on it, so it must be the
  // same in every copy of one epoch's map.
  int vnodes_per_weight = HashRing::kDefaultVnodesPerWeight;
  std::vector<ClusterNode> metadata;     // Metadata shards, in file order.
  std::vector<ClusterNode> chunkstores;  // Chunk-store nodes, in file order.

  // The rings. Ring index i is metadata[i] (or chunkstores[i]): HashRing keeps input order.
  // Building costs one SHA-256 per virtual node, so build once per epoch and keep the ring.
  // Fail with INVALID_ARGUMENT only for a map that ValidateClusterMap refuses.
  absl::StatusOr<HashRing> MetadataRing() const;
  absl::StatusOr<HashRing> ChunkStoreRing() const;

  // The node with this id in either list, or nullptr. The pointer lives as long as the map
  // and its lists are not modified.
  const ClusterNode* FindNode(std::string_view id) const;

  friend bool operator==(const ClusterMap&, const ClusterMap&) = default;
};

// OK if `map` obeys every rule of cluster_map_format.md, else INVALID_ARGUMENT naming the field
// ("metadata[2].address: ...").
absl::Status ValidateClusterMap(const ClusterMap& map);

// Parses and validates a cluster map document. Never throws. INVALID_ARGUMENT, with a message
// naming the offending field, for malformed JSON, a missing or unknown "format", a missing or
// non-integer "epoch", an empty node list, a missing or duplicate id, a bad address or weight.
// Unknown fields are ignored (they are how later versions of format 1 add information).
absl::StatusOr<ClusterMap> ParseClusterMap(std::string_view json);

// The map as a format-1 JSON document (2-space indent, every field written, including
// vnodes_per_weight). ParseClusterMap(SerializeClusterMap(m)) == m for any map that
// ValidateClusterMap accepts; for one it refuses, the output is refused by ParseClusterMap too.
std::string SerializeClusterMap(const ClusterMap& map);

// Reads and parses the file at `path`. Errors from ReadFile (NOT_FOUND, PERMISSION_DENIED,
// FAILED_PRECONDITION if larger than kMaxFileSize, ...) or from ParseClusterMap, prefixed with
// the path.
absl::StatusOr<ClusterMap> LoadClusterMap(const std::string& path);

}  // namespace whorl

#endif  // WHORL_COMMON_CLUSTER_MAP_H_
