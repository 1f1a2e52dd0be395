#include "agent/repo_config.h"

#include <gtest/gtest.h>

namespace whorl::agent {
namespace {

// A config as builds before 2026-11-30 wrote it: no compression_large, no cut_on_ones.
std::string ConfigBeforeNov30(const std::string& compression) {
  return R"({"version": 2, "id": "00112233445566778899aabbccddeeff", "compression": ")" +
         compression +
         R"(", "chunker": {"polynomial": "0x3da3358b4dc173", "min_size": 8192, )"
         R"("avg_size": 32768, "max_size": 131072}})";
}

TEST(RepoConfigTest, NewConfigRoundTripsThroughJson) {
  auto c = NewRepoConfig(kDefaultChunkMin, kDefaultChunkAvg, kDefaultChunkMax, CompressionSpec{},
                         CompressionSpec{});
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->id.size(), 32u);
  EXPECT_EQ(PolyDegree(c->chunker.polynomial), 53);
  EXPECT_TRUE(PolyIsIrreducible(c->chunker.polynomial));
  auto back = RepoConfig::FromJson(c->ToJson());
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(back->id, c->id);
  EXPECT_EQ(back->chunker.polynomial, c->chunker.polynomial);
  EXPECT_EQ(back->chunker.max_size, kDefaultChunkMax);
  EXPECT_EQ(back->compression.ToString(), "zstd:3");
  EXPECT_EQ(back->large_compression.ToString(), "zstd:3");
}

TEST(RepoConfigTest, NewConfigsCutOnOnesOldOnesOnZeros) {
  auto c = NewRepoConfig(kDefaultChunkMin, kDefaultChunkAvg, kDefaultChunkMax, CompressionSpec{},
                         CompressionSpec{});
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_TRUE(c->chunker.cut_on_ones);
  const std::string json = c->ToJson();
  EXPECT_NE(json.find(R"("cut_on_ones": true)"), std::string::npos) << json;
  auto back = RepoConfig::FromJson(json);
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_TRUE(back->chunker.cut_on_ones);
  const std::string old = ConfigBeforeNov30("zstd:3");
  auto read = RepoConfig::FromJson(old);
  ASSERT_TRUE(read.ok()) << read.status();
  EXPECT_FALSE(read->chunker.cut_on_ones);
  EXPECT_EQ(read->ToJson().find("cut_on_ones"), std::string::npos);
  std::string bad = old;
  bad.insert(bad.find("\"min_size\""), R"("cut_on_ones": 1, )");
  EXPECT_EQ(RepoConfig::FromJson(bad).status().message(),
            "config chunker cut_on_ones is not true or false");
}

TEST(RepoConfigTest, LargeFilesCompressionIsItsOwnFieldAndDefaultsToTheOtherWhenAbsent) {
  auto c = NewRepoConfig(kDefaultChunkMin, kDefaultChunkAvg, kDefaultChunkMax, kDefaultCompression,
                         kDefaultLargeCompression);
  ASSERT_TRUE(c.ok()) << c.status();
  const std::string json = c->ToJson();
  EXPECT_NE(json.find(R"("compression": "zstd:3")"), std::string::npos) << json;
  EXPECT_NE(json.find(R"("compression_large": "lz4")"), std::string::npos) << json;
  auto back = RepoConfig::FromJson(json);
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(back->compression.ToString(), "zstd:3");
  EXPECT_EQ(back->large_compression.ToString(), "lz4");

  // A config written before the field existed: every chunk as `compression` says.
  const std::string old = ConfigBeforeNov30("zstd:5");
  auto read = RepoConfig::FromJson(old);
  ASSERT_TRUE(read.ok()) << read.status();
  EXPECT_EQ(read->large_compression.ToString(), "zstd:5");

  std::string bad = old;
  bad.insert(1, R"("compression_large": "zstd:99", )");
  auto refused = RepoConfig::FromJson(bad);
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_EQ(refused.status().message(),
            "config compression_large: compression must be 'none', 'zstd:N' with N in 1..19 or "
            "'lz4', got 'zstd:99'");
  bad = old;
  bad.insert(1, R"("compression_large": 1, )");
  EXPECT_EQ(RepoConfig::FromJson(bad).status().message(),
            "config compression_large is not a string");
}

TEST(RepoConfigTest, TwoConfigsDrawDifferentPolynomials) {
  auto a = NewRepoConfig(kDefaultChunkMin, kDefaultChunkAvg, kDefaultChunkMax, CompressionSpec{},
                         CompressionSpec{});
  auto b = NewRepoConfig(kDefaultChunkMin, kDefaultChunkAvg, kDefaultChunkMax, CompressionSpec{},
                         CompressionSpec{});
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_NE(a->chunker.polynomial, b->chunker.polynomial);
  EXPECT_NE(a->id, b->id);
}

// Every new config is version 5 (tree deltas), whatever its compression; a version 2 config
// naming LZ4 is refused (LZ4 records are what a version 2 build cannot read).
TEST(RepoConfigTest, ANewConfigIsVersion5AndLz4NeedsVersion3) {
  for (const auto& [comp, large, version] :
       std::vector<std::tuple<CompressionSpec, CompressionSpec, int>>{
           {kDefaultCompression, kDefaultLargeCompression, 5},
           {{Codec::kLz4, 0}, {Codec::kZstd, 1}, 5},
           {{Codec::kZstd, 3}, {Codec::kZstd, 1}, 5},
           {{Codec::kNone, 0}, {Codec::kNone, 0}, 5}}) {
    auto c = NewRepoConfig(kDefaultChunkMin, kDefaultChunkAvg, kDefaultChunkMax, comp, large);
    ASSERT_TRUE(c.ok()) << c.status();
    EXPECT_EQ(c->version, version) << comp.ToString() << " " << large.ToString();
    EXPECT_TRUE(c->bundles());
    EXPECT_TRUE(c->chunk_lists());
    EXPECT_TRUE(c->tree_deltas());
    auto back = RepoConfig::FromJson(c->ToJson());
    ASSERT_TRUE(back.ok()) << back.status();
    EXPECT_EQ(back->version, version);
    EXPECT_EQ(back->compression.codec, comp.codec);
    EXPECT_EQ(back->large_compression.codec, large.codec);
  }
  auto c = NewRepoConfig(kDefaultChunkMin, kDefaultChunkAvg, kDefaultChunkMax, kDefaultCompression,
                         kDefaultLargeCompression);
  ASSERT_TRUE(c.ok());
  c->version = 2;
  auto refused = RepoConfig::FromJson(c->ToJson());
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_EQ(refused.status().message(),
            "config names lz4 compression, which needs repository version 3, but is version 2");
}

TEST(RepoConfigTest, ReadsVersions1To4WithoutTreeDeltasAndWritesVersion5) {
  auto fresh = NewRepoConfig(kDefaultChunkMin, kDefaultChunkAvg, kDefaultChunkMax,
                             CompressionSpec{}, CompressionSpec{});
  ASSERT_TRUE(fresh.ok());
  EXPECT_EQ(fresh->version, 5);
  EXPECT_TRUE(fresh->bundles());
  EXPECT_TRUE(fresh->chunk_lists());
  EXPECT_TRUE(fresh->tree_deltas());
  for (int version : {2, 3, 4}) {
    RepoConfig older = *fresh;
    older.version = version;
    auto read = RepoConfig::FromJson(older.ToJson());
    ASSERT_TRUE(read.ok()) << read.status();
    EXPECT_TRUE(read->bundles());
    EXPECT_EQ(read->chunk_lists(), version == 4);
    EXPECT_FALSE(read->tree_deltas());
  }
  RepoConfig old = *fresh;
  old.version = 1;
  auto read = RepoConfig::FromJson(old.ToJson());
  ASSERT_TRUE(read.ok()) << read.status();
  EXPECT_EQ(read->version, 1);
  EXPECT_FALSE(read->bundles());
  EXPECT_FALSE(read->chunk_lists());
  EXPECT_FALSE(read->tree_deltas());
  EXPECT_EQ(RepoConfig::FromJson(R"({"version": 6})").status().code(),
            absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(RepoConfig::FromJson(R"({"version": 0})").status().code(),
            absl::StatusCode::kFailedPrecondition);
}

TEST(RepoConfigTest, RefusesUnknownVersion) {
  auto r = RepoConfig::FromJson(R"({"version": 99})");
  EXPECT_EQ(r.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_NE(std::string(r.status().message()).find("unsupported repository version 99"),
            std::string::npos);
}

// Found by repo_config_fuzz: the version and the chunk sizes were narrowed to 32 bits, so
// version 2^32+1 read as 1 and a min_size of 2^32+8192 as 8192.
TEST(RepoConfigTest, RefusesNumbersThatOnlyFitAfterTruncation) {
  const std::string rest =
      R"("id": "00112233445566778899aabbccddeeff", "compression": "zstd:3", "chunker": )"
      R"({"polynomial": "0x3da3358b4dc173", "avg_size": 32768, "max_size": 131072, "min_size": )";
  ASSERT_TRUE(RepoConfig::FromJson(R"({"version": 1, )" + rest + "8192}}").ok());
  auto version = RepoConfig::FromJson(R"({"version": 4294967297, )" + rest + "8192}}");
  EXPECT_EQ(version.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(version.status().message(),
            "unsupported repository version 4294967297 (this whorl reads 1 to 5)");
  auto size = RepoConfig::FromJson(R"({"version": 1, )" + rest + "4294975488}}");
  EXPECT_EQ(size.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_EQ(size.status().message(), "config chunker min_size is over 2^32");
}

TEST(RepoConfigTest, RefusesGarbageAndBadFields) {
  EXPECT_EQ(RepoConfig::FromJson("not json").status().code(), absl::StatusCode::kDataLoss);
  EXPECT_EQ(RepoConfig::FromJson("[]").status().code(), absl::StatusCode::kDataLoss);
  auto c = NewRepoConfig(kDefaultChunkMin, kDefaultChunkAvg, kDefaultChunkMax, CompressionSpec{},
                         CompressionSpec{});
  ASSERT_TRUE(c.ok());
  RepoConfig reducible = *c;
  reducible.chunker.polynomial = (1ull << 53) | 1;  // x^53 + 1 has the factor x + 1
  EXPECT_EQ(RepoConfig::FromJson(reducible.ToJson()).status().code(), absl::StatusCode::kDataLoss);
  RepoConfig bad_id = *c;
  bad_id.id = "xyz";
  EXPECT_EQ(RepoConfig::FromJson(bad_id.ToJson()).status().code(), absl::StatusCode::kDataLoss);
}

TEST(RepoConfigTest, InitRefusesBadSizes) {
  EXPECT_FALSE(
      NewRepoConfig(10, kDefaultChunkAvg, kDefaultChunkMax, CompressionSpec{}, CompressionSpec{})
          .ok());
  EXPECT_FALSE(
      NewRepoConfig(kDefaultChunkMin, 3000, kDefaultChunkMax, CompressionSpec{}, CompressionSpec{})
          .ok());
  EXPECT_FALSE(
      NewRepoConfig(kDefaultChunkMin, kDefaultChunkAvg, 1000, CompressionSpec{}, CompressionSpec{})
          .ok());
}

}  // namespace
}  // namespace whorl::agent
