#include "common/cluster_map.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <string>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "common/file_util.h"

namespace whorl {
namespace {

// The example of cluster_map_format.md.
constexpr char kExample[] = R"({
  "format": 1,
  "epoch": 3,
  "vnodes_per_weight": 2000,
  "metadata": [
    {"id": "meta-1", "address": "127.0.0.1:7001", "weight": 1},
    {"id": "meta-2", "address": "127.0.0.1:7002", "weight": 1}
  ],
  "chunkstores": [
    {"id": "chunk-1", "address": "chunk1.example.net:7101", "weight": 2},
    {"id": "chunk-2", "address": "[::1]:7102", "weight": 1}
  ]
})";

// kExample with `from` replaced by `to` (which must occur).
std::string Edited(std::string_view from, std::string_view to) {
  const std::string text(kExample);
  EXPECT_NE(text.find(from), std::string::npos) << from;
  std::string out = text;
  out.replace(out.find(from), from.size(), to);
  return out;
}

// Expects INVALID_ARGUMENT with `needle` in the message.
void ExpectRefused(const std::string& json, std::string_view needle) {
  const absl::StatusOr<ClusterMap> map = ParseClusterMap(json);
  ASSERT_FALSE(map.ok()) << json;
  EXPECT_EQ(map.status().code(), absl::StatusCode::kInvalidArgument) << map.status();
  EXPECT_NE(std::string(map.status().message()).find(needle), std::string::npos)
      << "message \"" << map.status().message() << "\" lacks \"" << needle << "\"";
}

TEST(ClusterMapTest, ParsesTheExample) {
  auto map = ParseClusterMap(kExample);
  ASSERT_TRUE(map.ok()) << map.status();
  EXPECT_EQ(map->epoch, 3u);
  EXPECT_EQ(map->vnodes_per_weight, 2000);
  ASSERT_EQ(map->metadata.size(), 2u);
  EXPECT_EQ(map->metadata[1], (ClusterNode{"meta-2", "127.0.0.1:7002", 1}));
  ASSERT_EQ(map->chunkstores.size(), 2u);
  EXPECT_EQ(map->chunkstores[0], (ClusterNode{"chunk-1", "chunk1.example.net:7101", 2}));
  EXPECT_EQ(map->chunkstores[1].address, "[::1]:7102");
}

TEST(ClusterMapTest, SerializeRoundTrips) {
  auto map = ParseClusterMap(kExample);
  ASSERT_TRUE(map.ok());
  const std::string text = SerializeClusterMap(*map);
  auto back = ParseClusterMap(text);
  ASSERT_TRUE(back.ok()) << back.status() << "\n" << text;
  EXPECT_EQ(*back, *map);
  EXPECT_EQ(SerializeClusterMap(*back), text);  // Stable: same map, same bytes.
  EXPECT_EQ(text.rfind(R"({
  "format": 1,
  "epoch": 3,
  "vnodes_per_weight": 2000,
  "metadata": [
    {
      "id": "meta-1",
      "address": "127.0.0.1:7001",
      "weight": 1
    },)",
                       0),
            0u)
      << text;
}

TEST(ClusterMapTest, OptionalFieldsTakeTheirDefaults) {
  auto map = ParseClusterMap(R"({"format": 1, "epoch": 1,
      "metadata": [{"id": "m", "address": "h:1"}],
      "chunkstores": [{"id": "c", "address": "h:2"}]})");
  ASSERT_TRUE(map.ok()) << map.status();
  EXPECT_EQ(map->vnodes_per_weight, HashRing::kDefaultVnodesPerWeight);
  EXPECT_EQ(map->metadata[0].weight, 1);
  EXPECT_EQ(map->chunkstores[0].weight, 1);
}

TEST(ClusterMapTest, UnknownFieldsAreIgnored) {
  auto map = ParseClusterMap(Edited(R"("epoch": 3,)", R"("epoch": 3, "zone": {"a": [1]},)"));
  ASSERT_TRUE(map.ok()) << map.status();
  auto node = ParseClusterMap(Edited(R"("weight": 2})", R"("weight": 2, "rack": "r7"})"));
  ASSERT_TRUE(node.ok()) << node.status();
}

TEST(ClusterMapTest, RefusesMalformedJson) {
  ExpectRefused("", "malformed JSON");
  ExpectRefused(std::string(kExample).substr(0, 100), "malformed JSON");
  ExpectRefused(Edited(R"("epoch": 3,)", R"("epoch": 3)"), "malformed JSON");
  ExpectRefused(std::string(10000, '['), "malformed JSON");
  ExpectRefused(std::string("{\"format\": 1, \"x\": \"\xff\"}"), "malformed JSON");
  ExpectRefused("[1, 2]", "must be a JSON object");
}

TEST(ClusterMapTest, RefusesMissingOrUnknownFormat) {
  ExpectRefused(Edited(R"("format": 1,)", ""), "format: missing");
  ExpectRefused(Edited(R"("format": 1,)", R"("format": 2,)"), "format: unsupported format 2");
  ExpectRefused(Edited(R"("format": 1,)", R"("format": "1",)"), "format: unsupported format");
}

TEST(ClusterMapTest, RefusesMissingOrBadEpoch) {
  ExpectRefused(Edited(R"("epoch": 3,)", ""), "epoch: missing");
  ExpectRefused(Edited(R"("epoch": 3,)", R"("epoch": "3",)"), "epoch: must be an integer");
  ExpectRefused(Edited(R"("epoch": 3,)", R"("epoch": -3,)"), "epoch: must be an integer");
  ExpectRefused(Edited(R"("epoch": 3,)", R"("epoch": 3.5,)"), "epoch: must be an integer");
  ExpectRefused(Edited(R"("epoch": 3,)", R"("epoch": 0,)"), "epoch: must be an integer in 1..");
  auto max = ParseClusterMap(Edited(R"("epoch": 3,)", R"("epoch": 18446744073709551615,)"));
  ASSERT_TRUE(max.ok()) << max.status();
  EXPECT_EQ(max->epoch, 18446744073709551615u);
}

TEST(ClusterMapTest, RefusesBadVnodesPerWeight) {
  ExpectRefused(Edited("2000", "0"), "vnodes_per_weight: must be an integer in 1..65536");
  ExpectRefused(Edited("2000", "65537"), "vnodes_per_weight");
  ExpectRefused(Edited("2000", "\"many\""), "vnodes_per_weight");
}

TEST(ClusterMapTest, RefusesMissingOrEmptyLists) {
  ExpectRefused(Edited(R"("metadata": [)", R"("metadatas": [)"), "metadata: missing");
  ExpectRefused(R"({"format": 1, "epoch": 1, "metadata": [],
                    "chunkstores": [{"id": "c", "address": "h:1"}]})",
                "metadata: must list at least one node");
  ExpectRefused(R"({"format": 1, "epoch": 1, "metadata": [{"id": "m", "address": "h:1"}],
                    "chunkstores": []})",
                "chunkstores: must list at least one node");
  ExpectRefused(R"({"format": 1, "epoch": 1, "metadata": [{"id": "m", "address": "h:1"}],
                    "chunkstores": {"id": "c"}})",
                "chunkstores: must be an array");
  ExpectRefused(Edited(R"({"id": "meta-1", "address": "127.0.0.1:7001", "weight": 1})", "7"),
                "metadata[0]: must be an object");
}

TEST(ClusterMapTest, RefusesMissingBadOrDuplicateIds) {
  ExpectRefused(Edited(R"("id": "meta-2", )", ""), "metadata[1].id: missing");
  ExpectRefused(Edited(R"("id": "meta-2")", R"("id": "")"), "metadata[1].id: missing or empty");
  ExpectRefused(Edited(R"("id": "meta-2")", R"("id": 2)"), "metadata[1].id: must be a string");
  ExpectRefused(Edited(R"("id": "meta-2")", R"("id": "meta 2")"), "metadata[1].id: id \"meta 2\"");
  ExpectRefused(
      Edited(R"("id": "meta-2")", absl::StrCat("\"id\": \"", std::string(129, 'x'), "\"")),
      "longer than 128");
  ExpectRefused(Edited(R"("id": "meta-2")", R"("id": "meta-1")"),
                "metadata[1].id: duplicate id \"meta-1\" (also metadata[0])");
  // Ids are unique across both lists, so FindNode is unambiguous.
  ExpectRefused(Edited(R"("id": "chunk-2")", R"("id": "meta-1")"),
                "chunkstores[1].id: duplicate id \"meta-1\" (also metadata[0])");
}

TEST(ClusterMapTest, RefusesBadAddresses) {
  for (const char* address :
       {"127.0.0.1", "127.0.0.1:", ":7001", "127.0.0.1:0", "127.0.0.1:65536", "127.0.0.1:99999",
        "127.0.0.1:123456", "127.0.0.1:+80", "127.0.0.1:-1", "127.0.0.1:7o01", "::1:7001", "[::1]",
        "[]:7001", "[::g]:7001", "host name:7001", "host/x:7001", ""}) {
    SCOPED_TRACE(address);
    ExpectRefused(Edited("127.0.0.1:7002", address), "metadata[1].address");
  }
  ExpectRefused(Edited(R"("address": "127.0.0.1:7002", )", ""), "metadata[1].address: missing");
  ExpectRefused(Edited(R"("address": "127.0.0.1:7002")", R"("address": 7002)"),
                "metadata[1].address: must be a string");
}

TEST(ClusterMapTest, AcceptsGoodAddresses) {
  for (const char* address : {"127.0.0.1:1", "localhost:65535", "meta-1.example.net:7001",
                              "[::1]:7001", "[fe80::1:2]:80", "h_1:0080"}) {
    SCOPED_TRACE(address);
    auto map = ParseClusterMap(Edited("127.0.0.1:7002", address));
    ASSERT_TRUE(map.ok()) << map.status();
    EXPECT_EQ(map->metadata[1].address, address);
  }
}

TEST(ClusterMapTest, RefusesBadWeights) {
  for (const char* weight : {"0", "-1", "1.5", "\"2\"", "true", "null", "65537"}) {
    SCOPED_TRACE(weight);
    ExpectRefused(Edited(R"("weight": 2})", absl::StrCat("\"weight\": ", weight, "}")),
                  "chunkstores[0].weight: must be an integer in 1..65536");
  }
}

TEST(ClusterMapTest, ValidateCatchesHandBuiltMaps) {
  auto map = ParseClusterMap(kExample);
  ASSERT_TRUE(map.ok());
  EXPECT_TRUE(ValidateClusterMap(*map).ok());
  ClusterMap bad = *map;
  bad.chunkstores[1].weight = 0;
  EXPECT_EQ(ValidateClusterMap(bad).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(bad.ChunkStoreRing().status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_FALSE(ParseClusterMap(SerializeClusterMap(bad)).ok());
  bad = *map;
  bad.epoch = 0;
  EXPECT_EQ(ValidateClusterMap(bad).code(), absl::StatusCode::kInvalidArgument);
  bad = *map;
  bad.metadata[0].weight = ClusterMap::kMaxWeight;
  bad.vnodes_per_weight = 1000;  // 65536 * 1000 virtual nodes: more than a ring allows.
  EXPECT_EQ(ValidateClusterMap(bad).code(), absl::StatusCode::kInvalidArgument);
}

TEST(ClusterMapTest, RingsFollowTheListsAndTheirWeights) {
  auto map = ParseClusterMap(Edited("2000", "40"));
  ASSERT_TRUE(map.ok());
  auto meta = map->MetadataRing();
  auto chunks = map->ChunkStoreRing();
  ASSERT_TRUE(meta.ok() && chunks.ok());
  ASSERT_EQ(meta->nodes().size(), 2u);
  EXPECT_EQ(meta->nodes()[1].id, map->metadata[1].id);
  EXPECT_EQ(meta->vnode_count(), 2u * 40);
  EXPECT_EQ(chunks->nodes()[0].id, "chunk-1");
  EXPECT_EQ(chunks->vnode_count(), 3u * 40);  // chunk-1 has weight 2.
  const uint64_t key = RingKey("snapshot-1");
  EXPECT_EQ(map->metadata[meta->OwnerIndex(key)].id, meta->nodes()[meta->OwnerIndex(key)].id);
}

TEST(ClusterMapTest, FindNodeLooksInBothLists) {
  auto map = ParseClusterMap(kExample);
  ASSERT_TRUE(map.ok());
  ASSERT_NE(map->FindNode("meta-2"), nullptr);
  EXPECT_EQ(map->FindNode("meta-2")->address, "127.0.0.1:7002");
  ASSERT_NE(map->FindNode("chunk-2"), nullptr);
  EXPECT_EQ(map->FindNode("chunk-2")->address, "[::1]:7102");
  EXPECT_EQ(map->FindNode("meta-3"), nullptr);
  EXPECT_EQ(map->FindNode(""), nullptr);
}

class ClusterMapFileTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string tmpl = ::testing::TempDir() + "cluster_map_test.XXXXXX";
    ASSERT_NE(mkdtemp(tmpl.data()), nullptr);
    dir_ = tmpl;
  }
  void TearDown() override {
    for (const char* name : {"/cluster.json", "/big.json"}) unlink((dir_ + name).c_str());
    rmdir(dir_.c_str());
  }
  std::string dir_;
};

TEST_F(ClusterMapFileTest, LoadsAFile) {
  const std::string path = dir_ + "/cluster.json";
  ASSERT_TRUE(WriteFileAtomic(path, kExample).ok());
  auto map = LoadClusterMap(path);
  ASSERT_TRUE(map.ok()) << map.status();
  EXPECT_EQ(map->epoch, 3u);
}

TEST_F(ClusterMapFileTest, LoadErrorsNameThePath) {
  const std::string missing = dir_ + "/absent.json";
  auto none = LoadClusterMap(missing);
  EXPECT_EQ(none.status().code(), absl::StatusCode::kNotFound);
  EXPECT_NE(none.status().message().find(missing), std::string::npos) << none.status();

  const std::string path = dir_ + "/cluster.json";
  ASSERT_TRUE(WriteFileAtomic(path, "{").ok());
  auto bad = LoadClusterMap(path);
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(bad.status().message().find(path), std::string::npos) << bad.status();
}

TEST_F(ClusterMapFileTest, RefusesFilesOverOneMebibyte) {
  const std::string path = dir_ + "/big.json";
  std::string text(kExample);
  text.append(ClusterMap::kMaxFileSize, ' ');  // Valid JSON, but too big.
  ASSERT_TRUE(WriteFileAtomic(path, text).ok());
  EXPECT_EQ(LoadClusterMap(path).status().code(), absl::StatusCode::kFailedPrecondition);
}

}  // namespace
}  // namespace whorl
