#include "metadata-service/metadata_store.h"

#include <gtest/gtest.h>
#include <stdlib.h>

#include <filesystem>

#include "chunk-store/test_util.h"

namespace whorl::metadata {
namespace {

class MetadataStoreTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string tmpl = ::testing::TempDir() + "/metaXXXXXX";
    ASSERT_NE(mkdtemp(tmpl.data()), nullptr);
    dir_ = tmpl;
    auto store = MetadataStore::Open(dir_ + "/db");
    ASSERT_TRUE(store.ok()) << store.status();
    store_ = std::move(*store);
  }
  void TearDown() override {
    store_.reset();
    std::filesystem::remove_all(dir_);
  }
  std::string dir_;
  std::unique_ptr<MetadataStore> store_;
};

TEST_F(MetadataStoreTest, FindMissingAfterRegister) {
  const Fingerprint a = Sha256("a"), b = Sha256("b");
  ASSERT_TRUE(store_->Register({{a, IndexEntry{10, 20, 0, ""}}}).ok());
  auto missing = store_->FindMissing({a, b, a});
  ASSERT_TRUE(missing.ok());
  EXPECT_EQ(*missing, (std::vector<bool>{false, true, false}));
  auto stats = store_->Stats();
  ASSERT_TRUE(stats.ok());
  EXPECT_EQ(stats->unique_chunks, 1u);
  EXPECT_EQ(stats->stored_bytes, 10u);
  EXPECT_EQ(stats->plain_bytes, 20u);
}

// Writes that would leave less free space than the reserve are refused before RocksDB sees
// them, and change nothing.
TEST_F(MetadataStoreTest, WritesThatWouldEatTheReserveAreRefused) {
  const Fingerprint a = Sha256("a"), b = Sha256("b");
  ASSERT_TRUE(store_->Register({{a, IndexEntry{10, 20, 0, ""}}}).ok());
  store_.reset();
  MetadataStoreOptions options;
  options.reserve_bytes = uint64_t{1} << 62;
  auto full = MetadataStore::Open(dir_ + "/db", options);
  ASSERT_TRUE(full.ok()) << full.status();
  absl::Status s = (*full)->Register({{b, IndexEntry{10, 20, 0, ""}}});
  EXPECT_EQ(s.code(), absl::StatusCode::kResourceExhausted) << s;
  EXPECT_NE(std::string(s.message()).find("No space left on device: " + dir_ + "/db"),
            std::string::npos)
      << s;
  v1::Snapshot snap;
  snap.set_root(a.ToBytes());
  EXPECT_EQ((*full)->CommitSnapshot(snap).status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_EQ((*full)->PutConfig("config").code(), absl::StatusCode::kResourceExhausted);
  EXPECT_EQ(*(*full)->FindMissing({a, b}), (std::vector<bool>{false, true}));
  full->reset();
  auto store = MetadataStore::Open(dir_ + "/db");
  ASSERT_TRUE(store.ok()) << store.status();
  EXPECT_TRUE((*store)->ListSnapshots()->empty());
  EXPECT_EQ((*store)->GetConfig().status().code(), absl::StatusCode::kNotFound);
  ASSERT_TRUE((*store)->Register({{b, IndexEntry{10, 20, 0, ""}}}).ok());
}

// A read-only open (a reader of a full disk) answers from what is stored, refuses every write
// and writes no file at all.
TEST_F(MetadataStoreTest, ReadOnlyOpenAnswersRefusesWritesAndWritesNothing) {
  const Fingerprint a = Sha256("a"), b = Sha256("b");
  ASSERT_TRUE(store_->Register({{a, IndexEntry{10, 20, 0, ""}}}).ok());
  v1::Snapshot snap;
  snap.set_root(a.ToBytes());
  ASSERT_TRUE(store_->CommitSnapshot(snap).ok());
  store_.reset();
  const auto before = chunkstore::testing::FilesAndSizes(dir_);
  {
    MetadataStoreOptions options;
    options.read_only = true;
    auto ro = MetadataStore::Open(dir_ + "/db", options);
    ASSERT_TRUE(ro.ok()) << ro.status();
    EXPECT_EQ(*(*ro)->FindMissing({a, b}), (std::vector<bool>{false, true}));
    EXPECT_EQ((*ro)->ListSnapshots()->size(), 1u);
    const absl::Status s = (*ro)->Register({{b, IndexEntry{10, 20, 0, ""}}});
    EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition) << s;
    EXPECT_NE(s.message().find("opened read-only"), std::string::npos) << s;
    EXPECT_EQ((*ro)->CommitSnapshot(snap).status().code(), absl::StatusCode::kFailedPrecondition);
    EXPECT_EQ((*ro)->PutConfig("config").code(), absl::StatusCode::kFailedPrecondition);
    EXPECT_EQ((*ro)->Unregister({a}).code(), absl::StatusCode::kFailedPrecondition);
  }
  EXPECT_EQ(chunkstore::testing::FilesAndSizes(dir_), before);
}

// RocksDB's info log goes to the options' sink at the level asked for, never to a LOG file.
TEST_F(MetadataStoreTest, RocksDbInfoLogGoesToTheSinkNotToAFile) {
  store_.reset();
  std::vector<std::string> info, warn;
  MetadataStoreOptions options;
  options.log = [&](rocksdb::InfoLogLevel level, std::string_view line) {
    (level >= rocksdb::InfoLogLevel::WARN_LEVEL ? warn : info).emplace_back(line);
  };
  options.log_level = rocksdb::InfoLogLevel::INFO_LEVEL;
  {
    auto store = MetadataStore::Open(dir_ + "/db", options);
    ASSERT_TRUE(store.ok()) << store.status();
  }
  ASSERT_FALSE(info.empty());
  EXPECT_NE(info[0].find("RocksDB version"), std::string::npos) << info[0];
  for (const auto& [name, size] : chunkstore::testing::FilesAndSizes(dir_)) {
    EXPECT_EQ(std::filesystem::path(name).filename().string().rfind("LOG", 0), std::string::npos)
        << name;
  }
  // At WARN, an open that goes well says nothing.
  info.clear();
  options.log_level = rocksdb::InfoLogLevel::WARN_LEVEL;
  auto store = MetadataStore::Open(dir_ + "/db", options);
  ASSERT_TRUE(store.ok()) << store.status();
  EXPECT_TRUE(info.empty()) << info[0];
  EXPECT_TRUE(warn.empty()) << warn[0];
}

TEST_F(MetadataStoreTest, RegisterKeepsFirstSeen) {
  const Fingerprint a = Sha256("a");
  ASSERT_TRUE(store_->Register({{a, IndexEntry{1, 1, 111, "n1"}}}).ok());
  ASSERT_TRUE(store_->Register({{a, IndexEntry{1, 1, 222, "n2"}}}).ok());
  auto e = store_->Lookup(a);
  ASSERT_TRUE(e.ok());
  EXPECT_EQ(e->first_seen_ns, 111);
  EXPECT_EQ(e->node, "n1");
  EXPECT_EQ(store_->Lookup(Sha256("zz")).status().code(), absl::StatusCode::kNotFound);
}

// Repair's forgetting: the entries go (after a reopen too), an absent one is skipped, and a
// later Register adds a forgotten chunk again with a new first_seen.
TEST_F(MetadataStoreTest, UnregisterForgetsEntriesUntilRegisteredAgain) {
  const Fingerprint a = Sha256("a"), b = Sha256("b"), c = Sha256("c");
  ASSERT_TRUE(
      store_->Register({{a, IndexEntry{1, 1, 111, ""}}, {b, IndexEntry{2, 2, 222, ""}}}).ok());
  EXPECT_EQ(*store_->RepairGeneration(), 0u);
  ASSERT_TRUE(store_->Unregister({a, c}).ok());
  EXPECT_EQ(*store_->FindMissing({a, b, c}), (std::vector<bool>{true, false, true}));
  store_.reset();
  auto reopened = MetadataStore::Open(dir_ + "/db");
  ASSERT_TRUE(reopened.ok()) << reopened.status();
  store_ = std::move(*reopened);
  EXPECT_EQ(*store_->FindMissing({a, b}), (std::vector<bool>{true, false}));
  EXPECT_EQ(store_->Lookup(a).status().code(), absl::StatusCode::kNotFound);
  ASSERT_TRUE(store_->Register({{a, IndexEntry{1, 1, 333, ""}}}).ok());
  EXPECT_EQ(store_->Lookup(a)->first_seen_ns, 333);
  EXPECT_EQ(store_->Lookup(b)->first_seen_ns, 222);
  EXPECT_TRUE(store_->Unregister({}).ok());
  // One generation per call that forgot something, kept across a reopen.
  EXPECT_EQ(*store_->RepairGeneration(), 1u);
  ASSERT_TRUE(store_->Unregister({c}).ok());
  EXPECT_EQ(*store_->RepairGeneration(), 2u);
}

TEST_F(MetadataStoreTest, CommitRefusesRootNotInIndex) {
  v1::Snapshot snap;
  snap.set_root(Sha256("root").ToBytes());
  EXPECT_EQ(store_->CommitSnapshot(snap).status().code(), absl::StatusCode::kFailedPrecondition);
  snap.set_root("short");
  EXPECT_EQ(store_->CommitSnapshot(snap).status().code(), absl::StatusCode::kInvalidArgument);
  auto list = store_->ListSnapshots();
  ASSERT_TRUE(list.ok());
  EXPECT_TRUE(list->empty());
}

TEST_F(MetadataStoreTest, CommitAndListOldestFirst) {
  const Fingerprint root = Sha256("root");
  ASSERT_TRUE(store_->Register({{root, IndexEntry{1, 1, 0, ""}}}).ok());
  v1::Snapshot newer, older;
  newer.set_root(root.ToBytes());
  newer.set_time_ns(200);
  older.set_root(root.ToBytes());
  older.set_time_ns(100);
  auto id_newer = store_->CommitSnapshot(newer);
  auto id_older = store_->CommitSnapshot(older);
  ASSERT_TRUE(id_newer.ok() && id_older.ok());
  EXPECT_EQ(*id_newer, SnapshotId(newer));
  auto list = store_->ListSnapshots();
  ASSERT_TRUE(list.ok());
  ASSERT_EQ(list->size(), 2u);
  EXPECT_EQ((*list)[0].id, *id_older);
  EXPECT_EQ((*list)[1].snapshot.time_ns(), 200);
}

TEST_F(MetadataStoreTest, ReopensWithoutWritesLeaveOneWal) {
  const Fingerprint a = Sha256("a");
  ASSERT_TRUE(store_->Register({{a, IndexEntry{10, 20, 0, ""}}}).ok());
  auto wals = [&] {
    int n = 0;
    for (const auto& e : std::filesystem::directory_iterator(dir_ + "/db")) {
      n += e.path().extension() == ".log";
    }
    return n;
  };
  for (int i = 0; i < 4; ++i) {
    store_.reset();
    auto store = MetadataStore::Open(dir_ + "/db");
    ASSERT_TRUE(store.ok()) << store.status();
    store_ = std::move(*store);
    EXPECT_EQ(wals(), 1) << "open " << i;
    auto missing = store_->FindMissing({a});
    ASSERT_TRUE(missing.ok());
    EXPECT_EQ(*missing, std::vector<bool>{false});
  }
}

TEST_F(MetadataStoreTest, SecondOpenOfSameDirFails) {
  auto second = MetadataStore::Open(dir_ + "/db");
  EXPECT_FALSE(second.ok());
}

}  // namespace
}  // namespace whorl::metadata
