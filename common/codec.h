// Chunk compression. A codec id is stored with every pack record, so readers know how to decode
// each chunk whatever the repository's current setting.
#ifndef WHORL_COMMON_CODEC_H_
#define WHORL_COMMON_CODEC_H_

#include <cstdint>
#include <string>
#include <string_view>

#include "absl/functional/function_ref.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace whorl {

enum class Codec : uint8_t {
  kNone = 0,  // stored as is
  kZstd = 1,  // one zstd frame
  kLz4 = 2,   // one LZ4 block (no frame); its plain size is the record's
};
inline constexpr Codec kNewestCodec = Codec::kLz4;

// True for a codec this build decodes.
inline bool KnownCodec(uint64_t codec) { return codec <= static_cast<uint64_t>(kNewestCodec); }

// Compression setting of a repository: "none", "zstd:N" (N in 1..19) or "lz4".
struct CompressionSpec {
  Codec codec = Codec::kZstd;
  int level = 3;
  std::string ToString() const;
  static absl::StatusOr<CompressionSpec> Parse(std::string_view text);
};

// Encodes `plain` per `spec`. If the codec would not make it smaller, stores it plain: `*codec`
// says which was used. Thread-safe (per-thread zstd contexts and LZ4 state).
std::string Encode(const CompressionSpec& spec, std::string_view plain, Codec* codec);

// Decodes `stored` written with `codec`; the result must be exactly `plain_size` bytes.
// DATA_LOSS if the bytes do not decode or decode to another size; INVALID_ARGUMENT for an
// unknown codec. Neither codec allocates the plain size before checking that the stored bytes
// can hold it (a zstd frame records it; an LZ4 block expands at most ~255x).
absl::StatusOr<std::string> Decode(Codec codec, std::string_view stored, uint64_t plain_size);

// Decode's checks and errors, into a buffer the caller gives once the stored bytes were found
// able to hold `plain_size` bytes: `buffer(plain_size)` returns where to write them. For a
// buffer that need not be zero-filled first (std::string's resize fills it).
absl::Status DecodeInto(Codec codec, std::string_view stored, uint64_t plain_size,
                        absl::FunctionRef<char*(uint64_t)> buffer);

}  // namespace whorl

#endif  // WHORL_COMMON_CODEC_H_
