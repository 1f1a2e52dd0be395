// ParseClusterMap on hostile JSON (a --cluster file, or an Admin.GetClusterMap answer the agent
// trusts). Properties: never crashes or throws; errors are INVALID_ARGUMENT; an accepted map
// passes ValidateClusterMap, Parse(Serialize(m)) == m and serializing again gives the same
// text; rings build for it (checked when they are small enough to build quickly).
#include "common/cluster_map.h"
#include "tests/fuzz/fuzz_util.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  absl::StatusOr<whorl::ClusterMap> map = whorl::ParseClusterMap(whorl::fuzz::AsView(data, size));
  if (!map.ok()) {
    FUZZ_CHECK(map.status().code() == absl::StatusCode::kInvalidArgument);
    return 0;
  }
  FUZZ_CHECK(whorl::ValidateClusterMap(*map).ok());
  FUZZ_CHECK(!map->metadata.empty() && !map->chunkstores.empty());
  const std::string text = whorl::SerializeClusterMap(*map);
  absl::StatusOr<whorl::ClusterMap> again = whorl::ParseClusterMap(text);
  FUZZ_CHECK(again.ok());
  FUZZ_CHECK(*again == *map);
  FUZZ_CHECK(whorl::SerializeClusterMap(*again) == text);
  for (const auto* list : {&map->metadata, &map->chunkstores}) {
    for (const whorl::ClusterNode& n : *list) FUZZ_CHECK(map->FindNode(n.id) != nullptr);
  }
  // Building a ring costs one SHA-256 per virtual node: only for small maps.
  uint64_t vnodes = 0;
  for (const auto* list : {&map->metadata, &map->chunkstores}) {
    for (const whorl::ClusterNode& n : *list) {
      vnodes += static_cast<uint64_t>(n.weight) * static_cast<uint64_t>(map->vnodes_per_weight);
    }
  }
  if (vnodes <= 20000) {
    absl::StatusOr<whorl::HashRing> meta = map->MetadataRing();
    absl::StatusOr<whorl::HashRing> chunk = map->ChunkStoreRing();
    FUZZ_CHECK(meta.ok() && chunk.ok());
    FUZZ_CHECK(meta->nodes().size() == map->metadata.size());
    FUZZ_CHECK(meta->OwnerIndex(0) < map->metadata.size());
    FUZZ_CHECK(chunk->OwnerIndex(~uint64_t{0}) < map->chunkstores.size());
  }
  return 0;
}
