// Decode (zstd / lz4 / none) on hostile stored bytes, as the chunk store and the agent call it.
// Input: codec byte, plain size (4 bytes little-endian, taken modulo 1 MiB + 1: callers bound it
// by the chunk-size cap first), then the stored bytes. Properties: never crashes; OK only with
// exactly plain_size bytes; errors are DATA_LOSS or INVALID_ARGUMENT (unknown codec); and for
// any bytes, Decode(Encode(x)) == x at several levels.
#include "common/codec.h"
#include "tests/fuzz/fuzz_util.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 5) return 0;
  const auto codec = static_cast<whorl::Codec>(data[0]);
  const uint32_t raw = static_cast<uint32_t>(data[1]) | static_cast<uint32_t>(data[2]) << 8 |
                       static_cast<uint32_t>(data[3]) << 16 | static_cast<uint32_t>(data[4]) << 24;
  const uint64_t plain_size = raw % ((1u << 20) + 1);
  const std::string_view stored = whorl::fuzz::AsView(data + 5, size - 5);
  absl::StatusOr<std::string> plain = whorl::Decode(codec, stored, plain_size);
  if (plain.ok()) {
    FUZZ_CHECK(plain->size() == plain_size);
    FUZZ_CHECK(whorl::KnownCodec(data[0]));
    if (codec == whorl::Codec::kNone) FUZZ_CHECK(*plain == stored);
  } else {
    const absl::StatusCode code = plain.status().code();
    FUZZ_CHECK(code == absl::StatusCode::kDataLoss ||
               (code == absl::StatusCode::kInvalidArgument && !whorl::KnownCodec(data[0])));
  }
  // Round trip of the stored bytes taken as plain data.
  for (const whorl::CompressionSpec spec : {whorl::CompressionSpec{whorl::Codec::kZstd, 1},
                                            whorl::CompressionSpec{whorl::Codec::kZstd, 3},
                                            whorl::CompressionSpec{whorl::Codec::kLz4, 0}}) {
    whorl::Codec used = whorl::Codec::kNone;
    const std::string enc = whorl::Encode(spec, stored, &used);
    FUZZ_CHECK(used == whorl::Codec::kNone || used == spec.codec);
    FUZZ_CHECK(used == whorl::Codec::kNone || enc.size() < stored.size());
    absl::StatusOr<std::string> back = whorl::Decode(used, enc, stored.size());
    FUZZ_CHECK(back.ok() && *back == stored);
    // A wrong plain size is refused, never silently padded or cut.
    FUZZ_CHECK(!whorl::Decode(used, enc, stored.size() + 1).ok());
  }
  return 0;
}
