// The uploader's bundles: which chunks go together (small file chunks, per group, up to a size
// or a span of the walk; trees with trees), which never do (big chunks), and SplitBundle, which
// undoes one.
#include "agent/uploader.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <map>
#include <set>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "agent/test_util.h"

namespace whorl::agent {
namespace {

namespace fs = std::filesystem;

// Records what the uploader puts (and stores it), with bundles allowed and grouped by the first
// byte's parity, as a two-node cluster would group them by owner.
class RecordingRepository : public ForwardingRepository {
 public:
  using ForwardingRepository::ForwardingRepository;
  bool AcceptsBundles() const override { return true; }
  size_t BundleGroup(const Fingerprint& fp) const override { return fp.bytes[0] % 2; }
  absl::Status PutChunks(std::vector<EncodedChunk> chunks) override {
    {
      absl::MutexLock lock(&mu_);
      for (const EncodedChunk& c : chunks) {
        puts.push_back(Put{c.fingerprint, c.members, c.plain_size, c.codec, c.data});
      }
    }
    return inner()->PutChunks(std::move(chunks));
  }
  struct Put {
    Fingerprint fp;
    std::vector<BundleMember> members;
    uint64_t plain_size;
    Codec codec;
    std::string data;
  };
  std::vector<Put> puts;  // read after Flush

 private:
  absl::Mutex mu_;
};

class UploaderTest : public ::testing::Test {
 protected:
  void SetUp() override {
    tmp_ = testing::MakeTempDir("whorl-uploader");
    repo_ = testing::NewEmbeddedRepository(tmp_ / "repo", "zstd:3");
    ASSERT_NE(repo_, nullptr);
  }
  void TearDown() override {
    repo_.reset();
    fs::remove_all(tmp_);
  }
  fs::path tmp_;
  std::unique_ptr<Repository> repo_;
};

std::string Text(int seed, size_t n) {
  std::string out;
  while (out.size() < n) absl::StrAppend(&out, "file ", seed, " line ", out.size(), "\n");
  out.resize(n);
  return out;
}

TEST_F(UploaderTest, SmallFileChunksAreBundledPerGroupTreesAndBigChunksAlone) {
  RecordingRepository rec(repo_.get());
  std::map<Fingerprint, std::string> small, big, trees;
  {
    ChunkUploader up(&rec);
    for (int i = 0; i < 400; ++i) {
      const std::string s = Text(i, 2000 + i);
      small[Sha256(s)] = s;
      ASSERT_TRUE(up.Add(Sha256(s), s, ChunkUploader::kSmallFile).ok());
      if (i % 50 == 0) {
        const std::string b = Text(i, ChunkUploader::kBundleMemberBytes);
        big[Sha256(b)] = b;
        ASSERT_TRUE(up.Add(Sha256(b), b, ChunkUploader::kSmallFile).ok());
        const std::string t = "tree " + std::to_string(i);
        trees[Sha256(t)] = t;
        ASSERT_TRUE(up.Add(Sha256(t), t, ChunkUploader::kOther).ok());
      }
    }
    ASSERT_TRUE(up.Flush().ok());
  }
  std::set<Fingerprint> bundled, alone;
  size_t bundles = 0;
  for (const auto& p : rec.puts) {
    if (p.members.empty()) {
      alone.insert(p.fp);
      continue;
    }
    ++bundles;
    uint64_t bytes = 0;
    for (const BundleMember& m : p.members) {
      EXPECT_EQ(m.fingerprint.bytes[0] % 2, p.members[0].fingerprint.bytes[0] % 2)
          << "a bundle across groups";
      EXPECT_TRUE(small.contains(m.fingerprint));
      EXPECT_TRUE(bundled.insert(m.fingerprint).second) << "bundled twice";
      bytes += m.size;
    }
    EXPECT_EQ(p.plain_size, BundleTableSize(p.members.size()) + bytes);
    // Closed once it reaches kBundleBytes: less than that plus one member.
    EXPECT_LT(bytes, ChunkUploader::kBundleBytes + 2400);
  }
  EXPECT_GE(bundles, 2u);
  for (const auto& [fp, s] : big) EXPECT_TRUE(alone.contains(fp));
  for (const auto& [fp, s] : trees) EXPECT_TRUE(alone.contains(fp));
  // Every small chunk is stored exactly once, in a bundle or (the last of a group) alone.
  for (const auto& [fp, s] : small) EXPECT_NE(bundled.contains(fp), alone.contains(fp));
  for (const auto* m : {&small, &big, &trees}) {
    for (const auto& [fp, s] : *m) {
      absl::StatusOr<std::string> got = repo_->GetChunk(fp);
      ASSERT_TRUE(got.ok()) << got.status();
      EXPECT_EQ(*got, s);
    }
  }
}

TEST_F(UploaderTest, ARepositoryWithoutBundlesGetsSingleChunks) {
  RecordingRepository rec(repo_.get());
  class NoBundles : public ForwardingRepository {
   public:
    using ForwardingRepository::ForwardingRepository;
    bool AcceptsBundles() const override { return false; }
  } plain(&rec);
  ChunkUploader up(&plain);
  for (int i = 0; i < 100; ++i) {
    ASSERT_TRUE(up.Add(Sha256(Text(i, 3000)), Text(i, 3000), ChunkUploader::kSmallFile).ok());
  }
  ASSERT_TRUE(up.Flush().ok());
  EXPECT_EQ(rec.puts.size(), 100u);
  for (const auto& p : rec.puts) EXPECT_TRUE(p.members.empty());
}

// What was stored, member by member, in order (a bundle's members where the bundle was stored),
// and which put each one came in.
std::vector<std::pair<Fingerprint, size_t>> StoredInOrder(const RecordingRepository& rec) {
  std::vector<std::pair<Fingerprint, size_t>> out;
  for (size_t k = 0; k < rec.puts.size(); ++k) {
    if (rec.puts[k].members.empty()) out.emplace_back(rec.puts[k].fp, k);
    for (const BundleMember& m : rec.puts[k].members) out.emplace_back(m.fingerprint, k);
  }
  return out;
}

TEST_F(UploaderTest, TreesAreBundledTogetherAndStoredAfterEveryChunkAddedBeforeThem) {
  RecordingRepository rec(repo_.get());
  std::map<Fingerprint, size_t> order;  // the position each chunk was added at
  std::set<Fingerprint> trees;
  {
    ChunkUploader up(&rec);
    for (int i = 0; i < 1500; ++i) {
      const std::string data = Text(i, 3000);
      order.emplace(Sha256(data), order.size());
      ASSERT_TRUE(up.Add(Sha256(data), data, ChunkUploader::kSmallFile).ok());
      const std::string tree = absl::StrCat("tree ", i, Text(-i, 1000));
      order.emplace(Sha256(tree), order.size());
      trees.insert(Sha256(tree));
      ASSERT_TRUE(up.AddTree(Sha256(tree), tree).ok());
      ASSERT_TRUE(up.AddTree(Sha256(tree), tree).ok());  // known: not queued again
    }
    ASSERT_TRUE(up.Flush().ok());
  }
  const std::vector<std::pair<Fingerprint, size_t>> stored = StoredInOrder(rec);
  ASSERT_EQ(stored.size(), order.size());
  std::set<Fingerprint> seen;
  std::set<size_t> tree_puts;
  for (const auto& [fp, put] : stored) {
    EXPECT_TRUE(seen.insert(fp).second) << "stored twice";
    if (!trees.contains(fp)) continue;
    tree_puts.insert(put);
    // Every chunk added before this tree is stored before it.
    for (const auto& [other, pos] : order) {
      if (pos < order.at(fp) && !trees.contains(other)) {
        EXPECT_TRUE(seen.contains(other)) << "a tree stored before a chunk added before it";
      }
    }
  }
  // ~1.5 MB of trees in two groups: one bundle per group (under kBundleBytes each, never
  // closed early: nothing was walked), holding trees only.
  ASSERT_EQ(tree_puts.size(), 2u);
  for (size_t put : tree_puts) {
    ASSERT_GT(rec.puts[put].members.size(), 700u);
    for (const BundleMember& m : rec.puts[put].members) EXPECT_TRUE(trees.contains(m.fingerprint));
  }
}

// A tree or a chunk list too big to share a bundle is stored alone, still after every chunk
// added before it (the open bundles of file chunks are closed before it, as before a bundled
// tree); chunk lists are bundled with lists only and stored without compression, trees with
// the repository's.
TEST_F(UploaderTest, BigTreesAndChunkListsComeAfterTheirChunksAndListsAreNotCompressed) {
  RecordingRepository rec(repo_.get());
  std::map<Fingerprint, size_t> order;  // the position each chunk was added at
  std::set<Fingerprint> trees, lists;
  {
    ChunkUploader up(&rec);
    for (int i = 0; i < 60; ++i) {
      const std::string data = Text(i, 3000);
      order.emplace(Sha256(data), order.size());
      ASSERT_TRUE(up.Add(Sha256(data), data, ChunkUploader::kSmallFile).ok());
      if (i % 10 != 9) continue;
      // Text compresses: only the codec chosen for lists keeps them plain.
      const std::string list = absl::StrCat("list ", i, Text(-i, i < 30 ? 1000 : 300000));
      order.emplace(Sha256(list), order.size());
      lists.insert(Sha256(list));
      ASSERT_TRUE(up.AddTree(Sha256(list), list, ChunkUploader::kChunkList).ok());
      const std::string tree = absl::StrCat("tree ", i, Text(-i, i < 30 ? 1000 : 300000));
      order.emplace(Sha256(tree), order.size());
      trees.insert(Sha256(tree));
      ASSERT_TRUE(up.AddTree(Sha256(tree), tree).ok());
    }
    ASSERT_TRUE(up.Flush().ok());
  }
  const std::vector<std::pair<Fingerprint, size_t>> stored = StoredInOrder(rec);
  ASSERT_EQ(stored.size(), order.size());
  std::set<Fingerprint> seen;
  for (const auto& [fp, put] : stored) {
    EXPECT_TRUE(seen.insert(fp).second) << "stored twice";
    if (!trees.contains(fp) && !lists.contains(fp)) continue;
    for (const auto& [other, pos] : order) {
      if (pos < order.at(fp) && !trees.contains(other) && !lists.contains(other)) {
        EXPECT_TRUE(seen.contains(other)) << "a tree or list stored before a chunk added before it";
      }
    }
  }
  size_t big_lists = 0, big_trees = 0;
  for (const auto& p : rec.puts) {
    if (p.members.empty()) {  // big, or the last of its kind (a bundle of one)
      const bool big = p.plain_size >= ChunkUploader::kBundleMemberBytes;
      if (lists.contains(p.fp)) {
        big_lists += big;
        EXPECT_EQ(p.codec, Codec::kNone);
      }
      if (trees.contains(p.fp)) {
        big_trees += big;
        EXPECT_EQ(p.codec, Codec::kZstd);
      }
      continue;
    }
    const bool of_lists = lists.contains(p.members[0].fingerprint);
    for (const BundleMember& m : p.members) {
      EXPECT_EQ(lists.contains(m.fingerprint), of_lists) << "lists bundled with other chunks";
    }
    EXPECT_EQ(p.codec, of_lists ? Codec::kNone : Codec::kZstd);
  }
  EXPECT_EQ(big_lists, 3u);
  EXPECT_EQ(big_trees, 3u);
  for (const auto* m : {&trees, &lists}) {
    for (const Fingerprint& fp : *m) EXPECT_TRUE(repo_->GetChunk(fp).ok());
  }
}

// Small and medium files' chunks, added interleaved (as the pool's threads add them), are
// bundled by kind: no bundle mixes the two, and each kind's chunks keep their order.
TEST_F(UploaderTest, MediumFileChunksAreBundledApartFromSmallFileChunks) {
  RecordingRepository rec(repo_.get());
  std::map<Fingerprint, ChunkUploader::Kind> kinds;
  std::vector<Fingerprint> small_order, medium_order;
  {
    ChunkUploader up(&rec);
    for (int i = 0; i < 600; ++i) {
      const bool medium = i % 3 == 0;
      const std::string s = Text(medium ? -i : i, 9000);
      const ChunkUploader::Kind kind =
          medium ? ChunkUploader::kMediumFile : ChunkUploader::kSmallFile;
      kinds[Sha256(s)] = kind;
      (medium ? medium_order : small_order).push_back(Sha256(s));
      ASSERT_TRUE(up.Add(Sha256(s), s, kind).ok());
    }
    ASSERT_TRUE(up.Flush().ok());
  }
  size_t bundles = 0;
  std::map<size_t, std::vector<Fingerprint>> stored;  // by group, in the order stored
  for (const auto& p : rec.puts) {
    if (p.members.empty()) continue;
    ++bundles;
    const ChunkUploader::Kind kind = kinds.at(p.members[0].fingerprint);
    for (const BundleMember& m : p.members) {
      EXPECT_EQ(kinds.at(m.fingerprint), kind) << "a bundle mixes small and medium files";
      stored[kind * 2 + m.fingerprint.bytes[0] % 2].push_back(m.fingerprint);
    }
  }
  EXPECT_GE(bundles, 4u);  // 5.4 MB: at least one full bundle of each kind
  // Within a kind and group, members are stored in the order they were added.
  for (const auto* order : {&small_order, &medium_order}) {
    for (size_t group = 0; group < 2; ++group) {
      std::vector<Fingerprint> want;
      for (const Fingerprint& fp : *order) {
        if (fp.bytes[0] % 2 == group) want.push_back(fp);
      }
      const ChunkUploader::Kind kind = kinds.at(order->front());
      const std::vector<Fingerprint>& got = stored[kind * 2 + group];
      ASSERT_LE(got.size(), want.size());
      EXPECT_TRUE(std::equal(got.begin(), got.end(), want.begin()));
    }
  }
}

// Chunks of one group whose first byte is even, the group RecordingRepository gives number 0.
std::vector<std::string> EvenChunks(size_t n, size_t size) {
  std::vector<std::string> out;
  for (int i = 0; out.size() < n; ++i) {
    std::string s = Text(i, size);
    if (Sha256(s).bytes[0] % 2 == 0) out.push_back(std::move(s));
  }
  return out;
}

TEST_F(UploaderTest, ABundleStaysOpenAcrossBatchesUntilFullOrTheWalkMovesOn) {
  RecordingRepository rec(repo_.get());
  // 3 MiB of 4 KiB chunks in one group: three batches' worth (kBatchBytes), which make one full
  // bundle (kBundleBytes) and the rest.
  const std::vector<std::string> chunks = EvenChunks(768, 4096);
  // Then two more, the second after the walk moved on by more than kBundleSpanBytes.
  const std::vector<std::string> more = EvenChunks(770, 100);
  {
    ChunkUploader up(&rec);
    for (const std::string& c : chunks) {
      ASSERT_TRUE(up.Add(Sha256(c), c, ChunkUploader::kSmallFile).ok());
    }
    ASSERT_TRUE(up.Add(Sha256(more[768]), more[768], ChunkUploader::kSmallFile).ok());
    up.Walked(ChunkUploader::kBundleSpanBytes + 1);
    ASSERT_TRUE(up.Add(Sha256(more[769]), more[769], ChunkUploader::kSmallFile).ok());
    ASSERT_TRUE(up.Flush().ok());
  }
  static_assert(ChunkUploader::kBundleBytes == 512 * 4096);
  ASSERT_EQ(rec.puts.size(), 3u);
  EXPECT_EQ(rec.puts[0].members.size(), 512u);  // full at kBundleBytes
  EXPECT_EQ(rec.puts[1].members.size(), 257u);  // the rest, and the chunk added before the walk
  EXPECT_EQ(rec.puts[1].members.back().fingerprint, Sha256(more[768]));
  EXPECT_TRUE(rec.puts[2].members.empty());  // alone: its bundle was closed before it came
  EXPECT_EQ(rec.puts[2].fp, Sha256(more[769]));
}

TEST(BundleCompressionTest, SmallZstdBundlesGetAtLeastLevel9) {
  const CompressionSpec zstd3{Codec::kZstd, 3}, zstd19{Codec::kZstd, 19}, lz4{Codec::kLz4, 0};
  const size_t small = ChunkUploader::kSmallBundleBytes - 1;
  const size_t full = ChunkUploader::kSmallBundleBytes;
  EXPECT_EQ(ChunkUploader::BundleCompression(zstd3, small).level, 9);
  EXPECT_EQ(ChunkUploader::BundleCompression(zstd3, full).level, 3);
  EXPECT_EQ(ChunkUploader::BundleCompression(zstd19, small).level, 19);
  EXPECT_EQ(ChunkUploader::BundleCompression(lz4, small).codec, Codec::kLz4);
  EXPECT_EQ(ChunkUploader::BundleCompression(CompressionSpec{Codec::kNone, 0}, small).codec,
            Codec::kNone);
}

// A large file's chunk is compressed with the repository's large_compression, everything else
// with its compression: each stored chunk's bytes are exactly what zstd makes at that level.
TEST_F(UploaderTest, LargeFileChunksGetTheLargeCompressionLevel) {
  class Levels : public RecordingRepository {
   public:
    explicit Levels(Repository* inner) : RecordingRepository(inner), config_(inner->config()) {
      config_.compression = CompressionSpec{Codec::kZstd, 19};
      config_.large_compression = CompressionSpec{Codec::kZstd, 1};
    }
    const RepoConfig& config() const override { return config_; }

   private:
    RepoConfig config_;
  } rec(repo_.get());
  const std::string large = Text(1, 100000), small = Text(2, 300000), other = Text(3, 50000);
  {
    ChunkUploader up(&rec);
    ASSERT_TRUE(up.Add(Sha256(large), large, ChunkUploader::kLargeFile).ok());
    ASSERT_TRUE(up.Add(Sha256(small), small, ChunkUploader::kSmallFile).ok());  // too big to bundle
    ASSERT_TRUE(up.Add(Sha256(other), other, ChunkUploader::kOther).ok());
    ASSERT_TRUE(up.AddTree(Sha256("a tree " + other), "a tree " + other).ok());
    ASSERT_TRUE(up.Flush().ok());
  }
  std::map<Fingerprint, int> want = {{Sha256(large), 1},
                                     {Sha256(small), 19},
                                     {Sha256(other), 19},
                                     {Sha256("a tree " + other), 19}};
  std::map<Fingerprint, std::string> plain = {{Sha256(large), large},
                                              {Sha256(small), small},
                                              {Sha256(other), other},
                                              {Sha256("a tree " + other), "a tree " + other}};
  ASSERT_EQ(rec.puts.size(), 4u);
  for (const auto& p : rec.puts) {
    ASSERT_TRUE(want.contains(p.fp));
    Codec codec;
    const std::string at_level =
        Encode(CompressionSpec{Codec::kZstd, want[p.fp]}, plain[p.fp], &codec);
    const std::string at_other =
        Encode(CompressionSpec{Codec::kZstd, 20 - want[p.fp]}, plain[p.fp], &codec);
    ASSERT_NE(at_level, at_other) << "levels 1 and 19 must differ on this text";
    EXPECT_EQ(p.codec, Codec::kZstd);
    EXPECT_EQ(p.data, at_level) << "chunk of " << plain[p.fp].size() << " bytes, level "
                                << want[p.fp];
  }
}

TEST(SplitBundleTest, GivesEachMemberBackEncodedAloneAndRefusesALyingTable) {
  EncodedChunk b;
  std::vector<std::string> parts = {Text(1, 5000), Text(2, 100), ""};
  for (const std::string& p : parts) {
    b.members.push_back({Sha256(p), static_cast<uint32_t>(p.size())});
  }
  std::string plain = EncodeBundleTable(b.members);
  for (const std::string& p : parts) plain += p;
  b.plain_size = plain.size();
  b.data = Encode(CompressionSpec{}, plain, &b.codec);
  absl::StatusOr<std::vector<EncodedChunk>> split = SplitBundle(b, CompressionSpec{});
  ASSERT_TRUE(split.ok()) << split.status();
  ASSERT_EQ(split->size(), 3u);
  for (size_t i = 0; i < 3; ++i) {
    const EncodedChunk& c = (*split)[i];
    EXPECT_EQ(c.fingerprint, Sha256(parts[i]));
    EXPECT_TRUE(c.members.empty());
    EXPECT_EQ(*Decode(c.codec, c.data, c.plain_size), parts[i]);
  }
  EXPECT_EQ((*split)[0].codec, Codec::kZstd);
  std::swap(b.members[0], b.members[1]);
  EXPECT_EQ(SplitBundle(b, CompressionSpec{}).status().code(), absl::StatusCode::kDataLoss);
}

}  // namespace
}  // namespace whorl::agent
