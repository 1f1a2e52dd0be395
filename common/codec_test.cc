#include "common/codec.h"

#include <gtest/gtest.h>
#include <zstd.h>

namespace whorl {
namespace {

TEST(CodecTest, ZstdRoundTripCompressesText) {
  const std::string plain(100000, 'x');
  Codec codec;
  const std::string stored = Encode(CompressionSpec{Codec::kZstd, 3}, plain, &codec);
  EXPECT_EQ(codec, Codec::kZstd);
  EXPECT_LT(stored.size(), plain.size() / 10);
  auto back = Decode(codec, stored, plain.size());
  ASSERT_TRUE(back.ok());
  EXPECT_EQ(*back, plain);
}

TEST(CodecTest, IncompressibleIsStoredPlain) {
  std::string plain;
  uint64_t x = 42;
  for (int i = 0; i < 4096; ++i) {
    x = x * 6364136223846793005ULL + 1442695040888963407ULL;
    plain.push_back(static_cast<char>(x >> 56));
  }
  Codec codec;
  const std::string stored = Encode(CompressionSpec{Codec::kZstd, 3}, plain, &codec);
  EXPECT_EQ(codec, Codec::kNone);
  EXPECT_EQ(stored, plain);
}

TEST(CodecTest, DecodeRefusesGarbageAndWrongSize) {
  EXPECT_EQ(Decode(Codec::kZstd, "not a zstd frame", 10).status().code(),
            absl::StatusCode::kDataLoss);
  Codec codec;
  const std::string stored = Encode(CompressionSpec{}, std::string(1000, 'a'), &codec);
  EXPECT_EQ(Decode(codec, stored, 999).status().code(), absl::StatusCode::kDataLoss);
  EXPECT_EQ(Decode(Codec::kNone, "abc", 4).status().code(), absl::StatusCode::kDataLoss);
  EXPECT_EQ(Decode(static_cast<Codec>(7), "abc", 3).status().code(),
            absl::StatusCode::kInvalidArgument);
}

// Found by codec_fuzz: Decode allocated (and zeroed) the claimed plain size before looking at
// the frame, so a 10-byte PutChunks item claiming 64 MiB cost 64 MiB of memset.
TEST(CodecTest, DecodeChecksTheFrameSizeBeforeAllocating) {
  constexpr uint64_t kHuge = uint64_t{1} << 40;  // would not fit in memory
  auto garbage = Decode(Codec::kZstd, "not a zstd frame", kHuge);
  EXPECT_EQ(garbage.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_EQ(garbage.status().message(), "zstd: not a zstd frame");
  Codec codec;
  const std::string stored = Encode(CompressionSpec{}, std::string(1000, 'a'), &codec);
  ASSERT_EQ(codec, Codec::kZstd);
  auto wrong = Decode(codec, stored, kHuge);
  EXPECT_EQ(wrong.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_EQ(wrong.status().message(), "zstd frame holds 1000 bytes, want 1099511627776");
  // A frame without its size (streaming compressors write those) is refused too.
  ZSTD_CCtx* cctx = ZSTD_createCCtx();
  ASSERT_EQ(ZSTD_CCtx_setParameter(cctx, ZSTD_c_contentSizeFlag, 0), 0u);
  std::string sizeless(ZSTD_compressBound(1000), '\0');
  const size_t n =
      ZSTD_compress2(cctx, sizeless.data(), sizeless.size(), std::string(1000, 'a').data(), 1000);
  ZSTD_freeCCtx(cctx);
  ASSERT_FALSE(ZSTD_isError(n));
  sizeless.resize(n);
  EXPECT_EQ(Decode(Codec::kZstd, sizeless, 1000).status().message(),
            "zstd frame does not record its size");
}

TEST(CodecTest, ParseSpec) {
  EXPECT_EQ(CompressionSpec::Parse("zstd:5")->level, 5);
  EXPECT_EQ(CompressionSpec::Parse("none")->codec, Codec::kNone);
  EXPECT_FALSE(CompressionSpec::Parse("zstd:0").ok());
  EXPECT_FALSE(CompressionSpec::Parse("zstd:20").ok());
  EXPECT_FALSE(CompressionSpec::Parse("lz4").ok());
  EXPECT_FALSE(CompressionSpec::Parse("zstd:3x").ok());
}

}  // namespace
}  // namespace whorl
