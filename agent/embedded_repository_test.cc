// The embedded repository's commit order: every put's locator entries are durable (and the
// packs' indexed ends past them) before the snapshot that names the chunks is committed.
#include <gtest/gtest.h>
#include <rocksdb/db.h>

#include <cstdint>
#include <filesystem>
#include <fstream>
#include <map>
#include <random>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "agent/backup.h"
#include "agent/test_util.h"
#include "chunk-store/pack.h"
#include "chunk-store/pack_format.h"

namespace whorl::agent {
namespace {

namespace fs = std::filesystem;

// pack id -> indexed end, as the locator in `store_dir` holds them now (a read-only open,
// which takes no lock: the repository may still be open).
std::map<uint32_t, uint64_t> PackEnds(const fs::path& store_dir) {
  std::map<uint32_t, uint64_t> ends;
  const std::vector<rocksdb::ColumnFamilyDescriptor> families = {
      {rocksdb::kDefaultColumnFamilyName, rocksdb::ColumnFamilyOptions()},
      {chunkstore::kPackEndsColumnFamily, rocksdb::ColumnFamilyOptions()}};
  std::vector<rocksdb::ColumnFamilyHandle*> handles;
  rocksdb::DB* db = nullptr;
  const rocksdb::Status s = rocksdb::DB::OpenForReadOnly(
      rocksdb::DBOptions(), (store_dir / chunkstore::kLocatorDirName).string(), families, &handles,
      &db);
  EXPECT_TRUE(s.ok()) << s.ToString();
  if (!s.ok()) return ends;
  std::unique_ptr<rocksdb::Iterator> it(db->NewIterator(rocksdb::ReadOptions(), handles[1]));
  for (it->SeekToFirst(); it->Valid(); it->Next()) {
    const rocksdb::Slice k = it->key(), v = it->value();
    EXPECT_EQ(k.size(), 4u);
    EXPECT_EQ(v.size(), 8u);
    if (k.size() != 4 || v.size() != 8) continue;
    uint32_t id = 0;  // big-endian
    for (size_t i = 0; i < 4; ++i) id = id << 8 | static_cast<uint8_t>(k[i]);
    uint64_t end = 0;  // little-endian
    for (size_t i = 8; i-- > 0;) end = end << 8 | static_cast<uint8_t>(v[i]);
    ends[id] = end;
  }
  it.reset();
  for (auto* h : handles) db->DestroyColumnFamilyHandle(h).PermitUncheckedError();
  delete db;
  return ends;
}

// pack id -> file size, for the packs that hold records (init leaves an empty one, which the
// locator need not name).
std::map<uint32_t, uint64_t> PackSizes(const fs::path& store_dir) {
  std::map<uint32_t, uint64_t> sizes;
  for (const auto& e : fs::directory_iterator(store_dir / chunkstore::kPacksDirName)) {
    const uint32_t id = chunkstore::ParsePackFileName(e.path().filename().string());
    if (id != 0 && e.file_size() > chunkstore::kPackHeaderSize) sizes[id] = e.file_size();
  }
  return sizes;
}

TEST(EmbeddedRepositoryTest, CommittedSnapshotFollowsItsChunksDurableLocatorEntries) {
  const fs::path tmp = testing::MakeTempDir("whorl-embedded");
  const fs::path src = tmp / "src";
  fs::create_directories(src);
  std::mt19937_64 rng(3);
  for (int f = 0; f < 8; ++f) {
    std::string data(100 << 10, '\0');
    for (char& c : data) c = static_cast<char>(rng());
    std::ofstream(src / absl::StrCat("f", f), std::ios::binary) << data;
  }
  auto repo = testing::NewEmbeddedRepository(tmp / "repo", "zstd:3");
  ASSERT_NE(repo, nullptr);
  BackupOptions opts;
  opts.paths = {src.string()};
  opts.host = "h";
  absl::StatusOr<BackupResult> b = RunBackup(repo.get(), opts);
  ASSERT_TRUE(b.ok()) << b.status();
  // Still open (its close would sync as well): the commit itself moved every pack's indexed end
  // to the end of its file, in the locator's one synced write before it. Puts alone leave the
  // ends where the last sync put them (a new pack at 16).
  const fs::path store = tmp / "repo" / "chunks";
  const std::map<uint32_t, uint64_t> sizes = PackSizes(store);
  ASSERT_FALSE(sizes.empty());
  EXPECT_GT(sizes.rbegin()->second, 800u << 10);  // the files' chunks are in there
  const std::map<uint32_t, uint64_t> ends = PackEnds(store);
  for (const auto& [id, size] : sizes) {
    EXPECT_TRUE(ends.contains(id) && ends.at(id) == size) << "pack " << id << " of " << size;
  }
  repo.reset();
  fs::remove_all(tmp);
}

}  // namespace
}  // namespace whorl::agent
