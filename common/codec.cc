#include "common/codec.h"

#include <lz4.h>
#include <zstd.h>

#include <charconv>
#include <cstring>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "common/status_macros.h"

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
// Hash and chain tables of a stronger level: 2^19 entries each (4 MB of context). zstd's own
// for a 1 MiB input at level 9 are 2^21 each, 13-16 MB of context for each compressing thread
// while it compresses a night's small bundles (the source tree's v8 night, cold: peak RSS 64 ->
// 56-57 MiB); what the nights add to the repository was the same or smaller (15.36 -> 14.85 MB
// over v1..v8). Strong levels only compress bundles under 1 MiB (agent/uploader.h).
constexpr int kStrongTableLog = 19;
// Level 3's tables, smaller than zstd's own for a 512 KiB bundle (hashLog 17 and chainLog 16,
// 768 KiB of tables beside the bundle in this core's 1 MiB L2 cache): 2^16 and 2^14 entries.
// `zstd -b3 -B512K` on a tar of the source tree, side by side: 135.1 MB at 220-289 MB/s with
// zstd's tables, 136.1 MB (+0.7%) at 335-340 MB/s with these. The tree's first backup (cold,
// three runs each, alternating): 2.92-3.00 s and 3.37-3.47 s of user CPU with zstd's, 2.78-2.82 s
// and 2.99-3.13 s with these, packs +1.2%; 17/14 and 16/15 saved less time for +0.6% and +0.8%.
constexpr int kLevel3HashLog = 16;
constexpr int kLevel3ChainLog = 14;
struct ZstdContexts {
  ZSTD_CCtx* c = ZSTD_createCCtx();
  ZSTD_DCtx* d = ZSTD_createDCtx();
  // Where Encode's output goes first, whole (zstd's: up to the input's size; LZ4's: a chunk's
  // bound), copied out at its exact size (a string sized to the bound would keep ~bound bytes
  // of capacity per stored chunk while a batch waits to be stored).
  std::string scratch;
  std::string lz4_state = std::string(static_cast<size_t>(LZ4_sizeofState()), '\0');
  ~ZstdContexts() {
    ZSTD_freeCCtx(c);
    ZSTD_freeDCtx(d);
  }
};
// Grows `scratch` to at least `size` bytes, rounded up to 256 KiB (resize would double its
// capacity: a 2 MiB bundle after a 1.5 MiB one left each compressing thread a 3 MiB scratch
// buffer for good; exactly `size` grew it again, zero-filled and faulted in, for every bundle a
// few bytes bigger than the biggest before: 12% of a first backup's page faults).
void Reserve(std::string* scratch, size_t size) {
  if (scratch->size() >= size) return;
  constexpr size_t kStep = 256 << 10;
  std::string().swap(*scratch);
  scratch->resize((size + kStep - 1) / kStep * kStep);
}
ZstdContexts& Contexts() {
  thread_local ZstdContexts contexts;
  return contexts;
}

// Compresses `plain` into an exactly sized string, or returns false if it does not shrink.
//
// Into this thread's scratch buffer, kept from call to call, then copied out once at its size:
// zstd's output given no more room than `plain` (ZSTD_compress2 fails when it does not fit,
// which is the "does not shrink" answer). Streamed into a growing string before (a 128 KiB
// step, a reserve of a quarter of the input, a final copy to trim it): two or three fresh
// blocks per bundle, each faulted in page by page as the heap's top gave them back, 24% of a
// first backup's page faults. The scratch is as big as the biggest input so far (2 MiB and a
// table for a bundle); LZ4 needs its bound there anyway.
bool ZstdEncode(int level, std::string_view plain, std::string* out) {
  ZstdContexts& z = Contexts();
  ZSTD_CCtx_reset(z.c, ZSTD_reset_session_and_parameters);
  if (ZSTD_isError(ZSTD_CCtx_setParameter(z.c, ZSTD_c_compressionLevel, level))) return false;
  if (level > kZstdLevelKept &&
      (ZSTD_isError(ZSTD_CCtx_setParameter(z.c, ZSTD_c_hashLog, kStrongTableLog)) ||
       ZSTD_isError(ZSTD_CCtx_setParameter(z.c, ZSTD_c_chainLog, kStrongTableLog)))) {
    return false;
  }
  if (level == 3 && (ZSTD_isError(ZSTD_CCtx_setParameter(z.c, ZSTD_c_hashLog, kLevel3HashLog)) ||
                     ZSTD_isError(ZSTD_CCtx_setParameter(z.c, ZSTD_c_chainLog, kLevel3ChainLog)))) {
    return false;
  }
  Reserve(&z.scratch, plain.size());
  // The frame records the plain size (ZSTD_compress2 knows it; content size is on by default).
  const size_t n = ZSTD_compress2(z.c, z.scratch.data(), plain.size(), plain.data(), plain.size());
  if (level > kZstdLevelKept) {
    // A strong level's tables (8-16 MiB at level 9) would stay with the thread: a fresh
    // context for the next call.
    ZSTD_freeCCtx(z.c);
    z.c = ZSTD_createCCtx();
  }
  if (ZSTD_isError(n) || n >= plain.size()) return false;  // does not shrink: stored plain
  out->assign(z.scratch.data(), n);
  return true;
}
}  // namespace

std::string Encode(const CompressionSpec& spec, std::string_view plain, Codec* codec) {
  if (spec.codec == Codec::kZstd && !plain.empty()) {
    std::string out;
    if (ZstdEncode(spec.level, plain, &out)) {
      *codec = Codec::kZstd;
      return out;
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

absl::Status DecodeInto(Codec codec, std::string_view stored, uint64_t plain_size,
                        absl::FunctionRef<char*(uint64_t)> buffer) {
  switch (codec) {
    case Codec::kNone:
      if (stored.size() != plain_size) {
        return absl::DataLossError("stored size differs from plain size");
      }
      if (plain_size > 0) std::memcpy(buffer(plain_size), stored.data(), plain_size);
      return absl::OkStatus();
    case Codec::kZstd: {
      // The frame header records the plain size (Encode always writes it): check it before
      // allocating, so that a few hostile bytes claiming a huge chunk cost nothing.
      const unsigned long long framed = ZSTD_getFrameContentSize(stored.data(), stored.size());
      if (framed == ZSTD_CONTENTSIZE_ERROR) return absl::DataLossError("zstd: not a zstd frame");
      if (framed == ZSTD_CONTENTSIZE_UNKNOWN) {
        return absl::DataLossError("zstd frame does not record its size");
      }
      if (framed != plain_size) {
        return absl::DataLossError(
            absl::StrCat("zstd frame holds ", framed, " bytes, want ", plain_size));
      }
      char* out = buffer(plain_size);
      const size_t n =
          ZSTD_decompressDCtx(Contexts().d, out, plain_size, stored.data(), stored.size());
      if (ZSTD_isError(n)) {
        return absl::DataLossError(absl::StrCat("zstd: ", ZSTD_getErrorName(n)));
      }
      if (n != plain_size) return absl::DataLossError("zstd frame decodes to the wrong size");
      return absl::OkStatus();
    }
    case Codec::kLz4: {
      // A block records no size; each of its bytes expands to at most ~255 (a match length
      // byte adds 255), so a size the stored bytes cannot hold is refused before allocating.
      if (plain_size > LZ4_MAX_INPUT_SIZE || plain_size > 256 * uint64_t{stored.size()} + 16 ||
          stored.size() > LZ4_MAX_INPUT_SIZE) {
        return absl::DataLossError(
            absl::StrCat("lz4 block of ", stored.size(), " bytes cannot hold ", plain_size));
      }
      char* out = buffer(plain_size);
      const int n = LZ4_decompress_safe(stored.data(), out, static_cast<int>(stored.size()),
                                        static_cast<int>(plain_size));
      if (n < 0) return absl::DataLossError("lz4: malformed block");
      if (static_cast<uint64_t>(n) != plain_size) {
        return absl::DataLossError(
            absl::StrCat("lz4 block decodes to ", n, " bytes, want ", plain_size));
      }
      return absl::OkStatus();
    }
  }
  return absl::InvalidArgumentError("unknown codec " + std::to_string(static_cast<int>(codec)));
}

absl::StatusOr<std::string> Decode(Codec codec, std::string_view stored, uint64_t plain_size) {
  if (codec == Codec::kNone && stored.size() == plain_size) return std::string(stored);
  std::string out;
  WHORL_RETURN_IF_ERROR(DecodeInto(codec, stored, plain_size, [&out](uint64_t n) {
    out.resize(n);
    return out.data();
  }));
  return out;
}

}  // namespace whorl
