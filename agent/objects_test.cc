#include "agent/objects.h"

#include <gtest/gtest.h>

#include <set>

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

// A base of five files; the target changes "c", drops "d" and adds "f".
struct DeltaCase {
  v1::Tree base;
  v1::Tree target;
  std::string base_id = Sha256("base").ToBytes();
  DeltaCase() {
    for (const char* name : {"a", "b", "c", "d", "e"}) *base.add_nodes() = FileNode(name);
    for (const char* name : {"a", "b", "c", "e", "f"}) *target.add_nodes() = FileNode(name);
    target.mutable_nodes(2)->set_size(7);
  }
};

TEST(TreeDeltaTest, HoldsOnlyWhatChangedAndAppliesToTheTargetExactly) {
  DeltaCase t;
  v1::Tree delta = MakeTreeDelta(t.base, t.base_id, t.target);
  ASSERT_TRUE(IsTreeDelta(delta));
  EXPECT_EQ(delta.base(), t.base_id);
  ASSERT_EQ(delta.nodes_size(), 2);
  EXPECT_EQ(delta.nodes(0).name(), "c");
  EXPECT_EQ(delta.nodes(0).size(), 7u);
  EXPECT_EQ(delta.nodes(1).name(), "f");
  ASSERT_EQ(delta.removed_size(), 1);
  EXPECT_EQ(delta.removed(0), "d");
  auto decoded = DecodeTree(EncodeTree(&delta));
  ASSERT_TRUE(decoded.ok()) << decoded.status();
  auto whole = ApplyTreeDelta(t.base, *decoded);
  ASSERT_TRUE(whole.ok()) << whole.status();
  EXPECT_FALSE(IsTreeDelta(*whole));
  EXPECT_EQ(EncodeTree(&*whole), EncodeTree(&t.target));
  // The same directory gives an empty delta, which applies to the base itself.
  v1::Tree none = MakeTreeDelta(t.base, t.base_id, t.base);
  EXPECT_EQ(none.nodes_size() + none.removed_size(), 0);
  auto same = ApplyTreeDelta(t.base, none);
  ASSERT_TRUE(same.ok());
  EXPECT_EQ(EncodeTree(&*same), EncodeTree(&t.base));
  EXPECT_FALSE(IsTreeDelta(t.base));
}

TEST(TreeDeltaTest, DecodeRefusesADeltaNoWriterMakes) {
  DeltaCase t;
  const v1::Tree good = MakeTreeDelta(t.base, t.base_id, t.target);
  auto refused = [](const v1::Tree& tree) { return DecodeTree(Serialize(tree)).status(); };
  v1::Tree no_base = good;
  no_base.clear_base();
  EXPECT_EQ(refused(no_base), absl::InvalidArgumentError("tree delta has no base"));
  v1::Tree short_base = good;
  short_base.set_base("short");
  EXPECT_EQ(refused(short_base), absl::InvalidArgumentError("tree delta has no base"));
  v1::Tree unsafe = good;
  unsafe.add_removed("../x");
  EXPECT_EQ(refused(unsafe),
            absl::InvalidArgumentError("tree delta removes an unsafe name '../x'"));
  v1::Tree unsorted = good;
  unsorted.add_removed("a");
  EXPECT_EQ(refused(unsorted), absl::InvalidArgumentError(
                                   "tree delta's removed names not sorted or duplicated at 'a'"));
  v1::Tree both = good;
  both.set_removed(0, "c");
  EXPECT_EQ(refused(both), absl::InvalidArgumentError("tree delta both removes and holds 'c'"));
}

TEST(TreeDeltaTest, ApplyRefusesADeltaBaseAndANameTheBaseLacks) {
  DeltaCase t;
  const v1::Tree delta = MakeTreeDelta(t.base, t.base_id, t.target);
  EXPECT_EQ(ApplyTreeDelta(delta, delta).status(),
            absl::DataLossError("tree delta's base is a delta too"));
  v1::Tree lacking = delta;
  lacking.set_removed(0, "zz");
  EXPECT_EQ(ApplyTreeDelta(t.base, lacking).status(),
            absl::DataLossError("tree delta removes 'zz', which its base does not hold"));
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

namespace whorl::agent {
namespace {

std::vector<Fingerprint> Fingerprints(size_t n, const std::string& salt) {
  std::vector<Fingerprint> out;
  for (size_t i = 0; i < n; ++i) out.push_back(Sha256(salt + std::to_string(i)));
  return out;
}

// Runs `fps` through a builder; returns the node and the lists it stored, in order.
struct Built {
  v1::Node node;
  std::vector<std::pair<Fingerprint, std::string>> lists;
};
Built Build(const std::vector<Fingerprint>& fps, bool lists_allowed = true) {
  Built b;
  ChunkListBuilder builder(lists_allowed, [&b](const Fingerprint& fp, std::string bytes) {
    b.lists.emplace_back(fp, std::move(bytes));
    return absl::OkStatus();
  });
  for (const Fingerprint& fp : fps) EXPECT_TRUE(builder.Add(fp).ok());
  EXPECT_TRUE(builder.Finish(&b.node).ok());
  return b;
}

TEST(ChunkListTest, AFileOfUpTo2048ChunksKeepsThemInline) {
  const std::vector<Fingerprint> fps = Fingerprints(kMaxInlineChunks, "a");
  const Built b = Build(fps);
  EXPECT_TRUE(b.lists.empty());
  EXPECT_EQ(b.node.chunk_lists_size(), 0);
  ASSERT_EQ(b.node.chunks_size(), static_cast<int>(fps.size()));
  for (size_t i = 0; i < fps.size(); ++i) EXPECT_EQ(b.node.chunks(i), fps[i].ToBytes());
}

TEST(ChunkListTest, ALongerFileNamesListsThatHoldItsChunksInOrder) {
  const std::vector<Fingerprint> fps = Fingerprints(60000, "b");
  const Built b = Build(fps);
  EXPECT_EQ(b.node.chunks_size(), 0);
  ASSERT_EQ(b.node.chunk_lists_size(), static_cast<int>(b.lists.size()));
  std::vector<Fingerprint> joined;
  for (size_t i = 0; i < b.lists.size(); ++i) {
    const auto& [fp, bytes] = b.lists[i];
    EXPECT_EQ(b.node.chunk_lists(i), fp.ToBytes());
    EXPECT_EQ(Sha256(bytes), fp);
    absl::StatusOr<std::vector<Fingerprint>> chunks = DecodeChunkList(bytes);
    ASSERT_TRUE(chunks.ok()) << chunks.status();
    EXPECT_LE(chunks->size(), kMaxListChunks);
    // Every list but the last ends where the rule says, and nowhere before.
    if (i + 1 < b.lists.size()) {
      EXPECT_TRUE(EndsChunkList(chunks->back(), chunks->size()));
    }
    for (size_t k = 0; k + 1 < chunks->size(); ++k) {
      EXPECT_FALSE(EndsChunkList((*chunks)[k], k + 1));
    }
    joined.insert(joined.end(), chunks->begin(), chunks->end());
  }
  EXPECT_EQ(joined, fps);
  // About one end in 4096 chunks past the first 256.
  EXPECT_GE(b.lists.size(), 8u);
  EXPECT_LE(b.lists.size(), 30u);
}

TEST(ChunkListTest, AnEditEarlyInABigFileLeavesItsLaterListsAsTheyWere) {
  const std::vector<Fingerprint> fps = Fingerprints(60000, "c");
  std::vector<Fingerprint> edited = fps;
  edited.insert(edited.begin() + 100, Sha256("inserted"));
  edited.erase(edited.begin() + 30000);
  const Built before = Build(fps), after = Build(edited);
  std::set<std::string> old_lists(before.node.chunk_lists().begin(),
                                  before.node.chunk_lists().end());
  int fresh = 0;
  for (const std::string& id : after.node.chunk_lists()) fresh += old_lists.contains(id) ? 0 : 1;
  EXPECT_GE(fresh, 1);
  EXPECT_LE(fresh, 2);  // the lists around the two edits; the count-based cut would change all
}

TEST(ChunkListTest, ARepositoryBeforeVersion4KeepsEveryChunkInline) {
  const std::vector<Fingerprint> fps = Fingerprints(10000, "d");
  const Built b = Build(fps, /*lists_allowed=*/false);
  EXPECT_TRUE(b.lists.empty());
  EXPECT_EQ(b.node.chunks_size(), 10000);
}

TEST(ChunkListTest, AFailedStoreFailsTheFile) {
  ChunkListBuilder builder(true, [](const Fingerprint&, std::string) {
    return absl::ResourceExhaustedError("disk full");
  });
  absl::Status s;
  for (const Fingerprint& fp : Fingerprints(kMaxInlineChunks + kMaxListChunks, "e")) {
    s = builder.Add(fp);
    if (!s.ok()) break;
  }
  EXPECT_EQ(s, absl::ResourceExhaustedError("disk full"));
}

TEST(ChunkListTest, DecodeRefusesWhatNoWriterMakes) {
  const std::string why = " fingerprints of 32 bytes";
  EXPECT_EQ(DecodeChunkList("").status(),
            absl::DataLossError("chunk list of 0 bytes is not 1 to 16384" + why));
  EXPECT_EQ(DecodeChunkList(std::string(33, 'x')).status(),
            absl::DataLossError("chunk list of 33 bytes is not 1 to 16384" + why));
  EXPECT_EQ(DecodeChunkList(std::string(32 * (kMaxListChunks + 1), 'x')).status(),
            absl::DataLossError("chunk list of 524320 bytes is not 1 to 16384" + why));
  EXPECT_EQ(DecodeChunkList(std::string(64, 'x'))->size(), 2u);
}

TEST(ChunkListTest, ANodeWithBothChunksAndListsOrABadListIdIsRefused) {
  v1::Node n;
  n.set_name("f");
  n.set_type(v1::Node::FILE);
  n.add_chunks(Sha256("x").ToBytes());
  n.add_chunk_lists(Sha256("y").ToBytes());
  EXPECT_EQ(ValidateNode(n),
            absl::InvalidArgumentError("file 'f' has both chunks and chunk lists"));
  n.clear_chunks();
  EXPECT_TRUE(ValidateNode(n).ok());
  n.add_chunk_lists("short");
  EXPECT_EQ(ValidateNode(n), absl::InvalidArgumentError("file 'f' has a bad chunk list id"));
}

}  // namespace
}  // namespace whorl::agent
