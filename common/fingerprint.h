// Fingerprints: SHA-256 of a chunk's plain bytes (OpenSSL EVP, which uses the CPU's SHA
// extensions), and the hex forms used in ids and messages.
#ifndef WHORL_COMMON_FINGERPRINT_H_
#define WHORL_COMMON_FINGERPRINT_H_

#include <array>
#include <cstdint>
#include <cstring>
#include <functional>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"

namespace whorl {

// A 32-byte SHA-256 digest. Value type; ordered bytewise.
struct Fingerprint {
  static constexpr size_t kSize = 32;
  std::array<uint8_t, kSize> bytes{};

  // The digest as a 32-byte string (the form stored in protos and keys).
  std::string ToBytes() const { return std::string(bytes.begin(), bytes.end()); }
  std::string ToHex() const;
  // First 8 bytes, big-endian: the ring position and the Bloom filter's hash input.
  uint64_t Prefix64() const;

  // Fails with INVALID_ARGUMENT unless `raw` is exactly 32 bytes.
  static absl::StatusOr<Fingerprint> FromBytes(std::string_view raw);
  // Fails with INVALID_ARGUMENT unless `hex` is 64 hex digits.
  static absl::StatusOr<Fingerprint> FromHex(std::string_view hex);

  friend bool operator==(const Fingerprint& a, const Fingerprint& b) = default;
  friend auto operator<=>(const Fingerprint& a, const Fingerprint& b) = default;
};

struct FingerprintHash {
  size_t operator()(const Fingerprint& f) const {
    size_t h;  // SHA-256 output is uniform: any 8 bytes make a good hash.
    std::memcpy(&h, f.bytes.data() + 8, sizeof(h));
    return h;
  }
};

// SHA-256 of `data`. Never fails for in-memory input (aborts if OpenSSL cannot).
Fingerprint Sha256(std::string_view data);

// Sha256 of a chunk. A chunk of zeros (a disk image's empty space: max-size chunks of zeros, one
// after another) costs a scan instead: the thread keeps the fingerprint of the last length of
// zeros it hashed.
Fingerprint ChunkSha256(std::string_view data);

// Lowercase hex of arbitrary bytes.
std::string HexEncode(std::string_view bytes);
// Fails with INVALID_ARGUMENT on odd length or a non-hex digit.
absl::StatusOr<std::string> HexDecode(std::string_view hex);

}  // namespace whorl

#endif  // WHORL_COMMON_FINGERPRINT_H_
