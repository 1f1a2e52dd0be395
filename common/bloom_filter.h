// BloomFilter: a set of fingerprints with no false negatives and a chosen false-positive rate.
// Each metadata shard keeps one of its fingerprints and publishes it (Index.GetFilter); the
// agent caches it and skips asking the shard about a fingerprint the filter says is certainly
// absent. A stale filter can only say "maybe present" for something absent (one question more)
// or "absent" for something added since (one upload more, which the chunk store dedups): never
// a missed upload. Layout in bloom_filter_format.md.
//
// Keys are SHA-256 fingerprints, already uniform: the k bit positions come from two 64-bit
// words of the fingerprint by double hashing (h1 + i*h2 mod m), no further hashing.
//
// Thread-compatible.
#ifndef WHORL_COMMON_BLOOM_FILTER_H_
#define WHORL_COMMON_BLOOM_FILTER_H_

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "common/fingerprint.h"

namespace whorl {

class BloomFilter {
 public:
  static constexpr uint64_t kMaxBits = uint64_t{1} << 33;  // 1 GiB
  static constexpr int kMaxHashes = 30;

  // Sized for `expected` keys at false-positive rate `fpp` (0 < fpp < 1): m = -n ln p / ln^2 2
  // bits (rounded up to whole 64-bit words), k = round(m/n ln 2) hashes (1..kMaxHashes).
  // n = 1M at p = 1% gives m = 9.59 Mbit (1.2 MB) and k = 7.
  BloomFilter(uint64_t expected, double fpp);
  // An empty filter of zero bits that says "maybe" to everything (the state before a fetch).
  BloomFilter() = default;

  void Add(const Fingerprint& fp);
  bool MayContain(const Fingerprint& fp) const;

  uint64_t bits() const { return bits_; }
  int hashes() const { return hashes_; }
  uint64_t added() const { return added_; }
  size_t size_bytes() const { return words_.size() * 8; }
  // The false-positive rate expected with the keys added so far: (1 - e^(-k n / m))^k.
  double expected_fpp() const;

  // Header (magic "WBLM", format version 1, k, m, `version`, keys added), the bits, then a
  // CRC32C of all of it.
  std::string Serialize(uint64_t version) const;
  // Refuses truncated, oversized or garbage bytes with DATA_LOSS and a message saying why.
  // `*version` (if not null) receives the version written by Serialize.
  static absl::StatusOr<BloomFilter> Parse(std::string_view bytes, uint64_t* version = nullptr);

 private:
  uint64_t bits_ = 0;
  int hashes_ = 0;
  uint64_t added_ = 0;
  std::vector<uint64_t> words_;
};

}  // namespace whorl

#endif  // WHORL_COMMON_BLOOM_FILTER_H_
