#include "common/bloom_filter.h"

#include <gtest/gtest.h>

#include <random>

namespace whorl {
namespace {

Fingerprint RandomFp(std::mt19937_64& rng) {
  Fingerprint fp;
  for (auto& b : fp.bytes) b = static_cast<uint8_t>(rng());
  return fp;
}

TEST(BloomFilterTest, SizingForOneMillionAtOnePercent) {
  BloomFilter f(1000000, 0.01);
  EXPECT_EQ(f.hashes(), 7);
  EXPECT_NEAR(static_cast<double>(f.bits()), 9.585e6, 1e4);
  EXPECT_LT(f.size_bytes(), 1200 * 1000u);
}

TEST(BloomFilterTest, NoFalseNegativesAndMeasuredRateNearTarget) {
  std::mt19937_64 rng(42);
  BloomFilter f(100000, 0.01);
  std::vector<Fingerprint> members;
  for (int i = 0; i < 100000; ++i) members.push_back(RandomFp(rng));
  for (const auto& fp : members) f.Add(fp);
  for (const auto& fp : members) ASSERT_TRUE(f.MayContain(fp));
  int false_positives = 0;
  constexpr int kProbes = 200000;
  for (int i = 0; i < kProbes; ++i) false_positives += f.MayContain(RandomFp(rng));
  const double rate = static_cast<double>(false_positives) / kProbes;
  EXPECT_GT(rate, 0.005);
  EXPECT_LT(rate, 0.015);
  EXPECT_NEAR(f.expected_fpp(), 0.01, 0.002);
}

TEST(BloomFilterTest, EmptyFilterSaysMaybe) {
  std::mt19937_64 rng(1);
  EXPECT_TRUE(BloomFilter().MayContain(RandomFp(rng)));
}

TEST(BloomFilterTest, RoundTripKeepsBitsAndVersion) {
  std::mt19937_64 rng(7);
  BloomFilter f(1000, 0.01);
  std::vector<Fingerprint> members;
  for (int i = 0; i < 1000; ++i) members.push_back(RandomFp(rng));
  for (const auto& fp : members) f.Add(fp);
  uint64_t version = 0;
  absl::StatusOr<BloomFilter> g = BloomFilter::Parse(f.Serialize(99), &version);
  ASSERT_TRUE(g.ok()) << g.status();
  EXPECT_EQ(version, 99u);
  EXPECT_EQ(g->bits(), f.bits());
  EXPECT_EQ(g->hashes(), f.hashes());
  EXPECT_EQ(g->added(), 1000u);
  EXPECT_EQ(g->Serialize(99), f.Serialize(99));
  for (const auto& fp : members) EXPECT_TRUE(g->MayContain(fp));
}

TEST(BloomFilterTest, ParseRefusesDamage) {
  BloomFilter f(1000, 0.01);
  const std::string good = f.Serialize(1);
  EXPECT_FALSE(BloomFilter::Parse("").ok());
  EXPECT_FALSE(BloomFilter::Parse(good.substr(0, 39)).ok());
  EXPECT_FALSE(BloomFilter::Parse(good.substr(0, good.size() - 1)).ok());
  EXPECT_FALSE(BloomFilter::Parse(good + "x").ok());
  for (size_t at : {0u, 4u, 8u, 12u, 16u, 20u}) {  // magic, format, k, reserved, m
    std::string bad = good;
    bad[at] ^= 0x40;
    const absl::Status s = BloomFilter::Parse(bad).status();
    EXPECT_EQ(s.code(), absl::StatusCode::kDataLoss) << "byte " << at;
  }
  // Every single-bit flip anywhere in the header is refused (the CRC covers it).
  for (size_t bit = 0; bit < 40 * 8; ++bit) {
    std::string bad = good;
    bad[bit / 8] ^= static_cast<char>(1 << (bit % 8));
    EXPECT_FALSE(BloomFilter::Parse(bad).ok()) << "bit " << bit;
  }
  std::string flipped_bits = good;
  flipped_bits[100] ^= 1;
  EXPECT_EQ(BloomFilter::Parse(flipped_bits).status().code(), absl::StatusCode::kDataLoss);
  std::string huge = good;
  huge[23] = 0x7f;  // m far over the cap
  EXPECT_EQ(BloomFilter::Parse(huge).status().code(), absl::StatusCode::kDataLoss);
}

}  // namespace
}  // namespace whorl
