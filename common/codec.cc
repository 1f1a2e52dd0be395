#include "common/codec.h"

#include <lz4.h>
#include <zstd.h>

#include <charconv>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace whorl {

std::string CompressionSpec::ToString() const {
  if (codec == Codec::kNone) return "none";
  if (codec == Codec::kLz4) return "lz4";
  return "zstd:" + std::to_string(level);
}

absl::StatusOr<CompressionSpec> CompressionSpec::Parse(std::string_view text) {
  if (text == "none") return CompressionSpec{Codec::kNone, 0};
  if (text == "zstd") return CompressionSpec{};
  if (text == "lz4") return CompressionSpec{Codec::kLz4, 0};
  if (text.substr(0, 5) == "zstd:") {
    std::string_view num = text.substr(5);
    int level = 0;
    auto [ptr, ec] = std::from_chars(num.data(), num.data() + num.size(), level);
    if (ec == std::errc() && ptr == num.data() + num.size() && level >= 1 && level <= 19) {
      return CompressionSpec{Codec::kZstd, level};
    }
  }
  return absl::InvalidArgumentError(
      "compression must be 'none', 'zstd:N' with N in 1..19 or 'lz4', got '" + std::string(text) +
      "'");
}

namespace {
// Levels up to this keep their compression context's tables for the thread's next call.
constexpr int kZstdLevelKept = 5;
struct ZstdContexts {
  ZSTD_CCtx* c = ZSTD_createCCtx();
  ZSTD_DCtx* d = ZSTD_createDCtx();
  // Encode compresses here and copies out the exact size: a string sized to the bound would
  // keep ~bound bytes of capacity per stored chunk while a batch waits to be stored.
  std::string scratch;
  std::string lz4_state = std::string(static_cast<size_t>(LZ4_sizeofState()), '\0');
  ~ZstdContexts() {
    ZSTD_freeCCtx(c);
    ZSTD_freeDCtx(d);
  }
};
// Grows `scratch` to exactly `size` bytes (resize would double its capacity: a 2 MiB bundle
// after a 1.5 MiB one left each compressing thread a 3 MiB scratch buffer for good).
void Reserve(std::string* scratch, size_t size) {
  if (scratch->size() >= size) return;
  std::string().swap(*scratch);
  scratch->resize(size);
}
ZstdContexts& Contexts() {
  thread_local ZstdContexts contexts;
  return contexts;
}
}  // namespace

std::string Encode(const CompressionSpec& spec, std::string_view plain, Codec* codec) {
  if (spec.codec == Codec::kZstd && !plain.empty()) {
    ZstdContexts& z = Contexts();
    const size_t bound = ZSTD_compressBound(plain.size());
    Reserve(&z.scratch, bound);
    const size_t n =
        ZSTD_compressCCtx(z.c, z.scratch.data(), bound, plain.data(), plain.size(), spec.level);
    if (spec.level > kZstdLevelKept) {
      // A strong level's tables (8-16 MiB at level 9) would stay with the thread: a fresh
      // context for the next call.
      ZSTD_freeCCtx(z.c);
      z.c = ZSTD_createCCtx();
    }
    if (!ZSTD_isError(n) && n < plain.size()) {
      *codec = Codec::kZstd;
      return std::string(z.scratch.data(), n);
    }
  }
  if (spec.codec == Codec::kLz4 && !plain.empty() && plain.size() <= LZ4_MAX_INPUT_SIZE) {
    ZstdContexts& z = Contexts();
    const int bound = LZ4_compressBound(static_cast<int>(plain.size()));
    Reserve(&z.scratch, static_cast<size_t>(bound));
    const int n = LZ4_compress_fast_extState(z.lz4_state.data(), plain.data(), z.scratch.data(),
                                             static_cast<int>(plain.size()), bound, 1);
    if (n > 0 && static_cast<size_t>(n) < plain.size()) {
      *codec = Codec::kLz4;
      return std::string(z.scratch.data(), n);
    }
  }
  *codec = Codec::kNone;
  return std::string(plain);
}

absl::StatusOr<std::string> Decode(Codec codec, std::string_view stored, uint64_t plain_size) {
  switch (codec) {
    case Codec::kNone:
      if (stored.size() != plain_size) {
        return absl::DataLossError("stored size differs from plain size");
      }
      return std::string(stored);
    case Codec::kZstd: {
      // The frame header records the plain size (Encode always writes it): check it before
      // allocating, so that a few hostile bytes claiming a huge chunk cost nothing.
      const unsigned long long framed = ZSTD_getFrameContentSize(stored.data(), stored.size());
      if (framed == ZSTD_CONTENTSIZE_ERROR) return absl::DataLossError("zstd: not a zstd frame");
      if (framed == ZSTD_CONTENTSIZE_UNKNOWN) {
        return absl::DataLossError("zstd frame does not record its size");
      }
      if (framed != plain_size) {
        return absl::DataLossError("zstd frame holds " + std::to_string(framed) + " bytes, want " +
                                   std::to_string(plain_size));
      }
      std::string out(plain_size, '\0');
      const size_t n =
          ZSTD_decompressDCtx(Contexts().d, out.data(), out.size(), stored.data(), stored.size());
      if (ZSTD_isError(n)) {
        return absl::DataLossError(std::string("zstd: ") + ZSTD_getErrorName(n));
      }
      if (n != plain_size) return absl::DataLossError("zstd frame decodes to the wrong size");
      return out;
    }
    case Codec::kLz4: {
      // A block records no size; each of its bytes expands to at most ~255 (a match length
      // byte adds 255), so a size the stored bytes cannot hold is refused before allocating.
      if (plain_size > LZ4_MAX_INPUT_SIZE || plain_size > 256 * uint64_t{stored.size()} + 16 ||
          stored.size() > LZ4_MAX_INPUT_SIZE) {
        return absl::DataLossError(
            absl::StrCat("lz4 block of ", stored.size(), " bytes cannot hold ", plain_size));
      }
      std::string out(plain_size, '\0');
      const int n = LZ4_decompress_safe(stored.data(), out.data(), static_cast<int>(stored.size()),
                                        static_cast<int>(out.size()));
      if (n < 0) return absl::DataLossError("lz4: malformed block");
      if (static_cast<uint64_t>(n) != plain_size) {
        return absl::DataLossError(
            absl::StrCat("lz4 block decodes to ", n, " bytes, want ", plain_size));
      }
      return out;
    }
  }
  return absl::InvalidArgumentError("unknown codec " + std::to_string(static_cast<int>(codec)));
}

}  // namespace whorl
