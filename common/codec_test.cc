#include "common/codec.h"

#include <gtest/gtest.h>
#include <lz4.h>
#include <zstd.h>

#include "absl/strings/str_cat.h"

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

// DecodeInto asks for its buffer once, only after the stored bytes were found able to hold
// the plain size, and fills it whole.
TEST(CodecTest, DecodeIntoAsksForTheBufferOnlyOnceTheChecksPass) {
  const std::string plain = absl::StrCat(std::string(5000, 'q'), "tail");
  for (const CompressionSpec spec :
       {CompressionSpec{Codec::kZstd, 3}, CompressionSpec{Codec::kLz4, 0},
        CompressionSpec{Codec::kNone, 0}}) {
    SCOPED_TRACE(spec.ToString());
    Codec codec;
    const std::string stored = Encode(spec, plain, &codec);
    ASSERT_EQ(codec, spec.codec);
    std::string out(plain.size(), '\xee');  // no zero-fill to hide an unwritten byte
    int asked = 0;
    auto into = [&](uint64_t n) {
      ++asked;
      EXPECT_EQ(n, plain.size());
      return out.data();
    };
    ASSERT_TRUE(DecodeInto(codec, stored, plain.size(), into).ok());
    EXPECT_EQ(asked, 1);
    EXPECT_EQ(out, plain);
    asked = 0;
    const absl::Status wrong = DecodeInto(codec, stored, uint64_t{1} << 40, into);
    EXPECT_EQ(wrong.code(), absl::StatusCode::kDataLoss);
    EXPECT_EQ(asked, 0);
  }
  int asked = 0;
  EXPECT_EQ(DecodeInto(Codec::kZstd, "not a zstd frame", 16,
                       [&](uint64_t) {
                         ++asked;
                         return static_cast<char*>(nullptr);
                       })
                .message(),
            "zstd: not a zstd frame");
  EXPECT_EQ(asked, 0);
}

TEST(CodecTest, Lz4RoundTripAndIncompressibleStoredPlain) {
  std::string plain;
  for (int i = 0; i < 5000; ++i) plain += "line " + std::to_string(i % 97) + " of a text file\n";
  Codec codec;
  const std::string stored = Encode(CompressionSpec{Codec::kLz4, 0}, plain, &codec);
  EXPECT_EQ(codec, Codec::kLz4);
  EXPECT_LT(stored.size(), plain.size() / 4);
  auto back = Decode(codec, stored, plain.size());
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(*back, plain);
  // A block has no header: the stored bytes are exactly what LZ4 itself makes.
  std::string direct(LZ4_compressBound(static_cast<int>(plain.size())), '\0');
  direct.resize(LZ4_compress_default(plain.data(), direct.data(), static_cast<int>(plain.size()),
                                     static_cast<int>(direct.size())));
  EXPECT_EQ(stored, direct);

  std::string noise;
  uint64_t x = 7;
  for (int i = 0; i < 4096; ++i) {
    x = x * 6364136223846793005ULL + 1442695040888963407ULL;
    noise.push_back(static_cast<char>(x >> 56));
  }
  EXPECT_EQ(Encode(CompressionSpec{Codec::kLz4, 0}, noise, &codec), noise);
  EXPECT_EQ(codec, Codec::kNone);
}

TEST(CodecTest, Lz4DecodeRefusesWrongSizesAndGarbageBeforeAllocating) {
  const std::string plain(100000, 'a');
  Codec codec;
  const std::string stored = Encode(CompressionSpec{Codec::kLz4, 0}, plain, &codec);
  ASSERT_EQ(codec, Codec::kLz4);
  // Too short and too long are both refused: a block decodes to one size only.
  EXPECT_EQ(Decode(codec, stored, plain.size() - 1).status().message(), "lz4: malformed block");
  EXPECT_EQ(Decode(codec, stored, plain.size() + 1).status().message(),
            "lz4 block decodes to 100000 bytes, want 100001");
  // A size the stored bytes cannot hold is refused without allocating it.
  auto huge = Decode(codec, stored, uint64_t{1} << 40);
  EXPECT_EQ(huge.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_EQ(huge.status().message(),
            absl::StrCat("lz4 block of ", stored.size(), " bytes cannot hold 1099511627776"));
  EXPECT_EQ(Decode(codec, "\xff\xff\xff", 600).status().message(), "lz4: malformed block");
  EXPECT_EQ(Decode(codec, "", 1).status().code(), absl::StatusCode::kDataLoss);
}

TEST(CodecTest, ParseSpec) {
  EXPECT_EQ(CompressionSpec::Parse("zstd:5")->level, 5);
  EXPECT_EQ(CompressionSpec::Parse("none")->codec, Codec::kNone);
  EXPECT_FALSE(CompressionSpec::Parse("zstd:0").ok());
  EXPECT_FALSE(CompressionSpec::Parse("zstd:20").ok());
  EXPECT_EQ(CompressionSpec::Parse("lz4")->codec, Codec::kLz4);
  EXPECT_EQ(CompressionSpec::Parse("lz4")->ToString(), "lz4");
  EXPECT_FALSE(CompressionSpec::Parse("lz4:1").ok());
  EXPECT_FALSE(CompressionSpec::Parse("zstd:3x").ok());
}

}  // namespace
}  // namespace whorl
