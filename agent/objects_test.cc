#include "agent/objects.h"

#include <gtest/gtest.h>

#include "common/fingerprint.h"

namespace whorl::agent {
namespace {

v1::Node FileNode(const std::string& name) {
  v1::Node n;
  n.set_name(name);
  n.set_type(v1::Node::FILE);
  n.add_chunks(Sha256(name).ToBytes());
  return n;
}

std::string Serialize(const v1::Tree& t) { return t.SerializeAsString(); }

TEST(TreeCodecTest, EncodeSortsAndDecodeRoundTrips) {
  v1::Tree t;
  *t.add_nodes() = FileNode("b");
  *t.add_nodes() = FileNode("a");
  const std::string bytes = EncodeTree(&t);
  auto back = DecodeTree(bytes);
  ASSERT_TRUE(back.ok()) << back.status();
  ASSERT_EQ(back->nodes_size(), 2);
  EXPECT_EQ(back->nodes(0).name(), "a");
  v1::Tree same;
  *same.add_nodes() = FileNode("a");
  *same.add_nodes() = FileNode("b");
  EXPECT_EQ(EncodeTree(&same), bytes);  // equal directories, equal bytes
}

TEST(TreeCodecTest, RefusesUnsafeNames) {
  for (const std::string& bad : {std::string(""), std::string("."), std::string(".."),
                                 std::string("a/b"), std::string("/etc"), std::string("a\0b", 3)}) {
    v1::Tree t;
    *t.add_nodes() = FileNode(bad);
    auto r = DecodeTree(Serialize(t));
    EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument) << "name: " << bad;
  }
}

TEST(TreeCodecTest, AcceptsNamesWithAnyOtherBytes) {
  v1::Tree t;
  *t.add_nodes() = FileNode("new\nline");
  *t.add_nodes() = FileNode("sp ace");
  *t.add_nodes() = FileNode("\xff\xfe");
  EXPECT_TRUE(DecodeTree(EncodeTree(&t)).ok());
}

TEST(TreeCodecTest, RefusesDuplicateAndUnsortedNames) {
  v1::Tree dup;
  *dup.add_nodes() = FileNode("x");
  *dup.add_nodes() = FileNode("x");
  EXPECT_EQ(DecodeTree(Serialize(dup)).status().code(), absl::StatusCode::kInvalidArgument);
  v1::Tree unsorted;
  *unsorted.add_nodes() = FileNode("b");
  *unsorted.add_nodes() = FileNode("a");
  EXPECT_EQ(DecodeTree(Serialize(unsorted)).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(TreeCodecTest, RefusesBadTypesAndFingerprints) {
  v1::Tree t;
  v1::Node n = FileNode("f");
  n.set_type(v1::Node::TYPE_UNSPECIFIED);
  *t.add_nodes() = n;
  EXPECT_EQ(DecodeTree(Serialize(t)).status().code(), absl::StatusCode::kInvalidArgument);
  v1::Tree d;
  v1::Node dir;
  dir.set_name("d");
  dir.set_type(v1::Node::DIR);
  dir.set_subtree("short");
  *d.add_nodes() = dir;
  EXPECT_EQ(DecodeTree(Serialize(d)).status().code(), absl::StatusCode::kInvalidArgument);
  v1::Tree c;
  v1::Node f = FileNode("f");
  f.add_chunks("xx");
  *c.add_nodes() = f;
  EXPECT_EQ(DecodeTree(Serialize(c)).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(TreeCodecTest, RefusesGarbage) {
  EXPECT_EQ(DecodeTree("\xff\xff\xff\xff").status().code(), absl::StatusCode::kDataLoss);
}

v1::Snapshot Snap() {
  v1::Snapshot s;
  s.set_repository_id("0123456789abcdef0123456789abcdef");
  s.set_root(Sha256("root").ToBytes());
  s.set_host("h");
  s.add_paths("/x");
  return s;
}

TEST(ManifestFileTest, RoundTrip) {
  const std::string file = EncodeManifestFile(Snap());
  auto back = DecodeManifestFile(file, Snap().repository_id());
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(back->host(), "h");
  EXPECT_EQ(back->root(), Snap().root());
}

TEST(ManifestFileTest, RefusesEveryTruncation) {
  const std::string file = EncodeManifestFile(Snap());
  for (size_t n = 0; n < file.size(); ++n) {
    auto r = DecodeManifestFile(file.substr(0, n), Snap().repository_id());
    ASSERT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument) << "cut at " << n;
    EXPECT_NE(std::string(r.status().message()).find("manifest"), std::string::npos);
  }
}

TEST(ManifestFileTest, RefusesEveryFlippedByte) {
  const std::string file = EncodeManifestFile(Snap());
  for (size_t i = 0; i < file.size(); ++i) {
    std::string bad = file;
    bad[i] ^= 0x01;
    EXPECT_FALSE(DecodeManifestFile(bad, Snap().repository_id()).ok()) << "byte " << i;
  }
}

TEST(ManifestFileTest, RefusesAnotherRepository) {
  auto r = DecodeManifestFile(EncodeManifestFile(Snap()), "ffffffffffffffffffffffffffffffff");
  EXPECT_EQ(r.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_NE(std::string(r.status().message()).find("another repository"), std::string::npos);
}

TEST(ManifestFileTest, RefusesUnknownVersion) {
  std::string file = EncodeManifestFile(Snap());
  file[8] = 2;
  auto r = DecodeManifestFile(file, Snap().repository_id());
  EXPECT_NE(std::string(r.status().message()).find("unsupported version 2"), std::string::npos);
}

}  // namespace
}  // namespace whorl::agent
