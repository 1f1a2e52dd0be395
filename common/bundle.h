// Bundles: several small chunks stored as one pack record, so that they are compressed together
// (zstd finds the redundancy between neighbouring small files, and pays its per-frame cost once)
// while each keeps its own fingerprint and locator entry. The layout is in
// chunk-store/pack_format.md ("Bundle records"); this is the code both the agent (which builds
// bundles) and the chunk store (which checks, indexes and slices them) use.
//
//   bundle_plain := count:uint32 member[count] bytes
//   member       := fingerprint:byte[32] size:uint32
//   bytes        := the members' plain bytes, concatenated in table order
#ifndef WHORL_COMMON_BUNDLE_H_
#define WHORL_COMMON_BUNDLE_H_

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "common/fingerprint.h"

namespace whorl {

// GetChunks with whole_bundles (proto/whorl/v1/service.proto): the bundles a node may refer back
// to on one stream are the last this many it sent, so a reader keeps that many decoded.
inline constexpr size_t kGetChunksBundlesKept = 8;

// Members a bundle may hold, at most (a table of 4096 x 36 bytes).
inline constexpr uint32_t kMaxBundleMembers = 4096;
inline constexpr size_t kBundleMemberEntrySize = Fingerprint::kSize + 4;

struct BundleMember {
  Fingerprint fingerprint;
  uint32_t size = 0;  // plain bytes
  friend bool operator==(const BundleMember&, const BundleMember&) = default;
};

// A member as found in a parsed bundle: where its bytes start in the bundle's plain bytes.
struct BundleSlice {
  BundleMember member;
  uint32_t offset = 0;
};

// Size of the member table (count and entries) for `count` members.
inline size_t BundleTableSize(size_t count) { return 4 + count * kBundleMemberEntrySize; }

// The member table: count, then fingerprint and size per member.
std::string EncodeBundleTable(const std::vector<BundleMember>& members);

// SHA-256 of the member table: what a bundle record carries in its fingerprint field.
Fingerprint BundleId(const std::vector<BundleMember>& members);

// Parses the plain bytes of a bundle and returns its members with their offsets. DATA_LOSS
// unless: the table is whole, 1 <= count <= kMaxBundleMembers, no fingerprint appears twice, and
// the table plus the members' sizes is exactly `plain.size()` bytes.
absl::StatusOr<std::vector<BundleSlice>> ParseBundle(std::string_view plain);

// Splits `total` bytes among members in proportion to their sizes (each member's share of a
// record's stored bytes, for statistics); the shares sum to exactly `total`. Members of size 0
// share equally with the others when all are empty.
std::vector<uint32_t> ApportionBytes(uint64_t total, const std::vector<BundleMember>& members);

}  // namespace whorl

#endif  // WHORL_COMMON_BUNDLE_H_
