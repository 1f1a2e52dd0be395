#include "common/hash_ring.h"

#include <algorithm>
#include <unordered_set>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace whorl {

uint64_t RingKey(std::string_view bytes) { return Sha256(bytes).Prefix64(); }

namespace {

absl::Status ValidateNodes(const std::vector<RingNode>& nodes, int vnodes_per_weight) {
  if (nodes.empty()) return absl::InvalidArgumentError("hash ring: no nodes");
  if (vnodes_per_weight <= 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("hash ring: vnodes_per_weight must be > 0, got ", vnodes_per_weight));
  }
  std::unordered_set<std::string_view> seen;
  size_t total = 0;
  for (const RingNode& node : nodes) {
    if (node.id.empty()) return absl::InvalidArgumentError("hash ring: empty node id");
    if (!seen.insert(node.id).second) {
      return absl::InvalidArgumentError(
          absl::StrCat("hash ring: duplicate node id \"", node.id, "\""));
    }
    if (node.weight <= 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("hash ring: node \"", node.id, "\": weight must be > 0, got ", node.weight));
    }
    // Both factors are positive ints, so the product fits in 64 bits.
    total += static_cast<size_t>(node.weight) * static_cast<size_t>(vnodes_per_weight);
    if (total > HashRing::kMaxVnodes) {
      return absl::InvalidArgumentError(absl::StrCat("hash ring: more than ", HashRing::kMaxVnodes,
                                                     " virtual nodes (weights too large)"));
    }
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<HashRing> HashRing::Build(std::vector<RingNode> nodes, int vnodes_per_weight) {
  if (absl::Status s = ValidateNodes(nodes, vnodes_per_weight); !s.ok()) return s;

  struct Vnode {
    uint64_t position;
    uint32_t node;
  };
  std::vector<Vnode> vnodes;
  for (size_t n = 0; n < nodes.size(); ++n) {
    const int count = nodes[n].weight * vnodes_per_weight;  // <= kMaxVnodes: no overflow.
    for (int i = 0; i < count; ++i) {
      vnodes.push_back(Vnode{RingKey(absl::StrCat(nodes[n].id, "#", i)), static_cast<uint32_t>(n)});
    }
  }
  // Two virtual nodes at one position (odds ~ V^2 / 2^65) go in id order, so the owner still
  // does not depend on the order of `nodes`.
  std::sort(vnodes.begin(), vnodes.end(), [&nodes](const Vnode& a, const Vnode& b) {
    if (a.position != b.position) return a.position < b.position;
    return nodes[a.node].id < nodes[b.node].id;
  });

  HashRing ring;
  ring.nodes_ = std::move(nodes);
  ring.positions_.reserve(vnodes.size());
  ring.owner_.reserve(vnodes.size());
  for (const Vnode& v : vnodes) {
    ring.positions_.push_back(v.position);
    ring.owner_.push_back(v.node);
  }
  return ring;
}

size_t HashRing::VnodeAtOrAfter(uint64_t key) const {
  const auto it = std::lower_bound(positions_.begin(), positions_.end(), key);
  if (it == positions_.end()) return 0;  // Past the last point: wrap to the first.
  return static_cast<size_t>(it - positions_.begin());
}

size_t HashRing::OwnerIndex(uint64_t key) const { return owner_[VnodeAtOrAfter(key)]; }

const std::string& HashRing::Owner(const Fingerprint& fp) const {
  return nodes_[OwnerIndex(fp.Prefix64())].id;
}

std::vector<size_t> HashRing::Owners(uint64_t key, size_t r) const {
  const size_t want = std::min(r, nodes_.size());
  std::vector<size_t> out;
  out.reserve(want);
  std::vector<bool> taken(nodes_.size(), false);
  // Walks at most once around the ring; every node has a virtual node, so `want` is reached.
  size_t j = VnodeAtOrAfter(key);
  for (size_t step = 0; out.size() < want && step < positions_.size(); ++step) {
    const size_t node = owner_[j];
    if (!taken[node]) {
      taken[node] = true;
      out.push_back(node);
    }
    j = (j + 1 == positions_.size()) ? 0 : j + 1;
  }
  return out;
}

}  // namespace whorl
