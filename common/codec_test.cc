#include "common/codec.h"

#include <gtest/gtest.h>

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
