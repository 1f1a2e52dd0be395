#include "chunk-store/chunk_store.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <rocksdb/db.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <unistd.h>

#include <atomic>
#include <filesystem>
#include <fstream>
#include <functional>
#include <set>
#include <thread>

#include "chunk-store/pack.h"
#include "chunk-store/pack_format.h"
#include "chunk-store/test_util.h"

namespace whorl::chunkstore {
namespace {

using testing::Bytes;
using testing::TempDir;

// Compressible text that differs per seed.
std::string Text(uint64_t seed, size_t n) {
  std::string out;
  while (out.size() < n)
    out += "chunk " + std::to_string(seed) + " line " + std::to_string(out.size()) + "\n";
  out.resize(n);
  return out;
}

ChunkPut MakeChunk(std::string_view plain, Codec codec = Codec::kZstd) {
  ChunkPut c;
  c.fingerprint = Sha256(plain);
  c.plain_size = plain.size();
  c.data = Encode(CompressionSpec{codec, 3}, plain, &c.codec);
  return c;
}

std::unique_ptr<ChunkStore> OpenOrDie(const std::string& dir, ChunkStoreOptions options = {}) {
  absl::StatusOr<std::unique_ptr<ChunkStore>> store = ChunkStore::Open(dir, options);
  EXPECT_TRUE(store.ok()) << store.status();
  return store.ok() ? *std::move(store) : nullptr;
}

std::string PackFile(const std::string& dir, uint32_t id) {
  return PackPath(dir + "/" + kPacksDirName, id);
}

void AppendToFile(const std::string& path, std::string_view bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::app);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  ASSERT_TRUE(out.good());
}

void FlipByte(const std::string& path, uint64_t offset) {
  std::fstream f(path, std::ios::binary | std::ios::in | std::ios::out);
  f.seekg(static_cast<std::streamoff>(offset));
  char c = 0;
  f.get(c);
  f.seekp(static_cast<std::streamoff>(offset));
  f.put(static_cast<char>(c ^ 0x20));
  ASSERT_TRUE(f.good());
}

// Each reads back whole through Get and through Read (which lends the bytes, once).
void ExpectReadsBack(ChunkStore& store, const std::vector<std::string>& plains) {
  for (const std::string& p : plains) {
    absl::StatusOr<std::string> got = store.Get(Sha256(p));
    ASSERT_TRUE(got.ok()) << got.status();
    EXPECT_EQ(*got, p);
    int calls = 0;
    const absl::Status read = store.Read(Sha256(p), [&](std::string_view lent) {
      ++calls;
      EXPECT_EQ(lent, p);
      return absl::OkStatus();
    });
    EXPECT_TRUE(read.ok()) << read;
    EXPECT_EQ(calls, 1);
  }
}

// The store's locator opened directly, with its column families, to plant bad entries.
struct LocatorDb {
  explicit LocatorDb(const std::string& store_dir) {
    rocksdb::DBOptions options;
    const std::vector<rocksdb::ColumnFamilyDescriptor> families = {
        {rocksdb::kDefaultColumnFamilyName, rocksdb::ColumnFamilyOptions()},
        {kPackEndsColumnFamily, rocksdb::ColumnFamilyOptions()}};
    const rocksdb::Status s =
        rocksdb::DB::Open(options, store_dir + "/" + kLocatorDirName, families, &handles, &db);
    EXPECT_TRUE(s.ok()) << s.ToString();
  }
  ~LocatorDb() {
    for (auto* h : handles) db->DestroyColumnFamilyHandle(h).PermitUncheckedError();
    delete db;
  }
  rocksdb::DB* db = nullptr;
  std::vector<rocksdb::ColumnFamilyHandle*> handles;
};

TEST(ChunkStoreTest, PutGetRoundTripZstd) {
  TempDir dir;
  auto store = OpenOrDie(dir.path());
  const std::string plain = Text(1, 10000);
  const ChunkPut c = MakeChunk(plain);
  ASSERT_EQ(c.codec, Codec::kZstd);
  uint64_t added = 99;
  ASSERT_TRUE(store->PutBatch({c}, &added).ok());
  EXPECT_EQ(added, 1u);
  ExpectReadsBack(*store, {plain});
  absl::StatusOr<ChunkLocation> loc = store->Locate(c.fingerprint);
  ASSERT_TRUE(loc.ok()) << loc.status();
  EXPECT_EQ(loc->pack_id, 1u);
  EXPECT_EQ(loc->offset, kPackHeaderSize);
  EXPECT_EQ(loc->stored_size, c.data.size());
  EXPECT_EQ(loc->plain_size, 10000u);
  EXPECT_EQ(loc->codec, Codec::kZstd);
}

TEST(ChunkStoreTest, PutGetRoundTripNone) {
  TempDir dir;
  auto store = OpenOrDie(dir.path());
  const std::vector<std::string> plains = {Bytes(1, 5000), "", "x"};
  std::vector<ChunkPut> batch;
  for (const auto& p : plains) batch.push_back(MakeChunk(p, Codec::kNone));
  ASSERT_TRUE(store->PutBatch(batch).ok());
  ExpectReadsBack(*store, plains);
  EXPECT_EQ(store->Locate(Sha256("x"))->codec, Codec::kNone);
}

TEST(ChunkStoreTest, GetOfAbsentChunkIsNotFound) {
  TempDir dir;
  auto store = OpenOrDie(dir.path());
  EXPECT_EQ(store->Get(Sha256("nope")).status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(store->Locate(Sha256("nope")).status().code(), absl::StatusCode::kNotFound);
}

TEST(ChunkStoreTest, ContainsAnswersInOrder) {
  TempDir dir;
  auto store = OpenOrDie(dir.path());
  ASSERT_TRUE(store->PutBatch({MakeChunk("a"), MakeChunk("c")}).ok());
  absl::StatusOr<std::vector<bool>> has =
      store->Contains({Sha256("a"), Sha256("b"), Sha256("c"), Sha256("a")});
  ASSERT_TRUE(has.ok()) << has.status();
  EXPECT_EQ(*has, (std::vector<bool>{true, false, true, true}));
}

TEST(ChunkStoreTest, PutOfStoredChunkIsNoOp) {
  TempDir dir;
  auto store = OpenOrDie(dir.path());
  const ChunkPut c = MakeChunk(Text(2, 3000));
  ASSERT_TRUE(store->PutBatch({c}).ok());
  const ChunkStoreStats before = *store->Stats();
  const uint64_t pack_size = std::filesystem::file_size(PackFile(dir.path(), 1));
  uint64_t added = 99;
  ASSERT_TRUE(store->PutBatch({c}, &added).ok());
  EXPECT_EQ(added, 0u);
  const ChunkStoreStats after = *store->Stats();
  EXPECT_EQ(after.chunks, before.chunks);
  EXPECT_EQ(after.stored_bytes, before.stored_bytes);
  EXPECT_EQ(after.plain_bytes, before.plain_bytes);
  EXPECT_EQ(after.packs, before.packs);
  EXPECT_EQ(std::filesystem::file_size(PackFile(dir.path(), 1)), pack_size);
}

TEST(ChunkStoreTest, DuplicateWithinBatchIsStoredOnce) {
  TempDir dir;
  auto store = OpenOrDie(dir.path());
  const ChunkPut c = MakeChunk(Bytes(3, 100), Codec::kNone);
  uint64_t added = 0;
  ASSERT_TRUE(store->PutBatch({c, MakeChunk("other"), c}, &added).ok());
  EXPECT_EQ(added, 2u);
  const ChunkStoreStats stats = *store->Stats();
  EXPECT_EQ(stats.chunks, 2u);
  EXPECT_EQ(stats.stored_bytes, 2 * kRecordHeaderSize + 100 + 5);
  EXPECT_EQ(stats.plain_bytes, 105u);
  EXPECT_EQ(stats.packs, 1u);
  EXPECT_EQ(std::filesystem::file_size(PackFile(dir.path(), 1)),
            kPackHeaderSize + stats.stored_bytes);
}

TEST(ChunkStoreTest, BatchWithLyingItemIsRefusedWhole) {
  TempDir dir;
  auto store = OpenOrDie(dir.path());
  ChunkPut liar = MakeChunk("claimed");
  liar.data = MakeChunk("actual").data;  // hashes to another fingerprint
  liar.plain_size = 6;
  const std::vector<ChunkPut> batch = {MakeChunk("good 1"), liar, MakeChunk("good 2")};
  const absl::Status s = store->PutBatch(batch);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find(Sha256("claimed").ToHex()), absl::string_view::npos) << s;
  EXPECT_EQ(*store->Contains({Sha256("good 1"), Sha256("claimed"), Sha256("good 2")}),
            (std::vector<bool>{false, false, false}));
  EXPECT_EQ(store->Stats()->chunks, 0u);
  EXPECT_EQ(std::filesystem::file_size(PackFile(dir.path(), 1)), kPackHeaderSize);
}

TEST(ChunkStoreTest, OversizedItemIsRefused) {
  TempDir dir;
  ChunkStoreOptions options;
  options.max_chunk_bytes = 1000;
  auto store = OpenOrDie(dir.path(), options);
  EXPECT_TRUE(store->PutBatch({MakeChunk(Bytes(4, 1000), Codec::kNone)}).ok());
  const ChunkPut big = MakeChunk(Bytes(5, 1001), Codec::kNone);
  const absl::Status s = store->PutBatch({MakeChunk("small"), big});
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find(big.fingerprint.ToHex()), absl::string_view::npos) << s;
  // A plain size over the cap is refused even when the stored bytes are small.
  const ChunkPut compressed = MakeChunk(Text(6, 5000));
  ASSERT_LT(compressed.data.size(), 1000u);
  EXPECT_EQ(store->PutBatch({compressed}).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(store->Stats()->chunks, 1u);
}

TEST(ChunkStoreTest, UnknownCodecIsRefused) {
  TempDir dir;
  auto store = OpenOrDie(dir.path());
  ChunkPut c = MakeChunk("abc", Codec::kNone);
  c.codec = static_cast<Codec>(9);
  EXPECT_EQ(store->PutBatch({c}).code(), absl::StatusCode::kInvalidArgument);
}

TEST(ChunkStoreTest, MissingDataIsRefusedWithoutVerification) {
  TempDir dir;
  ChunkStoreOptions options;
  options.verify_puts = false;
  auto store = OpenOrDie(dir.path(), options);
  ChunkPut c = MakeChunk(Text(7, 500));
  c.data.clear();
  EXPECT_EQ(store->PutBatch({c}).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(store->PutBatch({MakeChunk(Text(7, 500))}).ok());
}

TEST(ChunkStoreTest, ReopenKeepsEverything) {
  TempDir dir;
  std::vector<std::string> plains;
  for (int i = 0; i < 20; ++i) plains.push_back(i % 2 ? Text(i, 800 + i) : Bytes(i, 800 + i));
  ChunkStoreStats before;
  {
    auto store = OpenOrDie(dir.path());
    std::vector<ChunkPut> batch;
    for (const auto& p : plains) batch.push_back(MakeChunk(p));
    ASSERT_TRUE(store->PutBatch(batch).ok());
    before = *store->Stats();
  }
  auto store = OpenOrDie(dir.path());
  ExpectReadsBack(*store, plains);
  const ChunkStoreStats after = *store->Stats();
  EXPECT_EQ(after.chunks, 20u);
  EXPECT_EQ(after.stored_bytes, before.stored_bytes);
  EXPECT_EQ(after.plain_bytes, before.plain_bytes);
  EXPECT_EQ(after.packs, 1u);
}

// RocksDB 7.8 leaves the empty WAL of every open behind (common/file_util.h, RemoveEmptyWals):
// a store reopened nightly with nothing written must not gain a file per open, and the WAL
// holding acknowledged writes must be replayed, not removed.
TEST(ChunkStoreTest, ReopensWithoutWritesLeaveOneWalAndKeepTheWrites) {
  TempDir dir;
  const std::string locator = dir.path() + "/" + kLocatorDirName;
  auto wals = [&] {
    std::vector<std::string> out;
    for (const auto& e : std::filesystem::directory_iterator(locator)) {
      if (e.path().extension() == ".log") out.push_back(e.path().filename());
    }
    return out;
  };
  std::vector<std::string> plains = {Text(1, 900), Bytes(2, 700)};
  {
    auto store = OpenOrDie(dir.path());
    std::vector<ChunkPut> batch;
    for (const auto& p : plains) batch.push_back(MakeChunk(p));
    ASSERT_TRUE(store->PutBatch(batch).ok());
  }
  // Closing keeps the writes in the WAL only (no flush at close): it is not empty.
  ASSERT_EQ(wals().size(), 1u);
  EXPECT_GT(std::filesystem::file_size(locator + "/" + wals()[0]), 0u);
  for (int i = 0; i < 5; ++i) {
    auto store = OpenOrDie(dir.path());
    ExpectReadsBack(*store, plains);
    EXPECT_EQ(wals().size(), 1u) << "open " << i;
  }
  // A stray empty file of another name is not the stores' to remove.
  { std::ofstream(locator + "/notes.log"); }
  auto store = OpenOrDie(dir.path());
  ExpectReadsBack(*store, plains);
  EXPECT_EQ(wals().size(), 2u);
}

// A read-only open (a reader of a full disk) serves what is indexed, refuses puts, leaves the
// newest pack's unindexed tail alone and writes no file at all; RocksDB never writes its LOG.
TEST(ChunkStoreTest, ReadOnlyOpenServesReadsRefusesPutsAndWritesNothing) {
  TempDir dir;
  const std::vector<std::string> plains = {Text(1, 900), Bytes(2, 700)};
  {
    auto store = OpenOrDie(dir.path());
    std::vector<ChunkPut> batch;
    for (const auto& p : plains) batch.push_back(MakeChunk(p));
    ASSERT_TRUE(store->PutBatch(batch).ok());
  }
  const ChunkPut unindexed = MakeChunk(Text(3, 700));
  {
    auto writer = PackWriter::OpenForAppend(dir.path() + "/" + kPacksDirName, 1);
    ASSERT_TRUE(writer.ok()) << writer.status();
    RecordHeader h{unindexed.codec, static_cast<uint32_t>(unindexed.plain_size),
                   static_cast<uint32_t>(unindexed.data.size()), unindexed.fingerprint};
    ASSERT_TRUE((*writer)->Append(h, unindexed.data).ok());
    ASSERT_TRUE((*writer)->Sync().ok());
  }
  const auto before = testing::FilesAndSizes(dir.path());
  for (const auto& [name, size] : before) {
    EXPECT_EQ(std::filesystem::path(name).filename().string().rfind("LOG", 0), std::string::npos)
        << name;
  }
  {
    ChunkStoreOptions options;
    options.read_only = true;
    auto store = OpenOrDie(dir.path(), options);
    ASSERT_NE(store, nullptr);
    ExpectReadsBack(*store, plains);
    EXPECT_EQ(store->Get(unindexed.fingerprint).status().code(), absl::StatusCode::kNotFound);
    EXPECT_EQ(store->Stats()->chunks, 2u);
    EXPECT_TRUE(store->CheckPacks()->empty());
    const absl::Status s = store->PutBatch({MakeChunk("new")});
    EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition) << s;
    EXPECT_NE(s.message().find("opened read-only"), std::string::npos) << s;
  }
  EXPECT_EQ(testing::FilesAndSizes(dir.path()), before);
  // A read-only open of no store at all fails instead of making one.
  TempDir empty;
  ChunkStoreOptions options;
  options.read_only = true;
  EXPECT_FALSE(ChunkStore::Open(empty.path() + "/none", options).ok());
  EXPECT_FALSE(std::filesystem::exists(empty.path() + "/none"));
}

// Damage inside the locator's WAL, before its last record, is refused at open: RocksDB's default
// recovery would stop the replay there and open without the acknowledged puts after it.
TEST(ChunkStoreTest, DamageBeforeTheLastWalRecordFailsTheOpen) {
  TempDir dir;
  const std::string locator = dir.path() + "/" + kLocatorDirName;
  {
    auto store = OpenOrDie(dir.path());
    ASSERT_TRUE(store->PutBatch({MakeChunk(Text(1, 900))}).ok());
    ASSERT_TRUE(store->PutBatch({MakeChunk(Text(2, 900))}).ok());
  }
  std::string wal;
  for (const auto& e : std::filesystem::directory_iterator(locator)) {
    if (e.path().extension() == ".log" && e.file_size() > 0) wal = e.path();
  }
  ASSERT_FALSE(wal.empty());
  FlipByte(wal, 12);  // inside the first record's payload
  const absl::StatusOr<std::unique_ptr<ChunkStore>> store = ChunkStore::Open(dir.path(), {});
  EXPECT_EQ(store.status().code(), absl::StatusCode::kDataLoss) << store.status();
  EXPECT_NE(store.status().message().find("Corruption"), std::string::npos) << store.status();
}

TEST(ChunkStoreTest, ForEachVisitsInFingerprintOrderAndStopsOnError) {
  TempDir dir;
  auto store = OpenOrDie(dir.path());
  std::vector<ChunkPut> batch;
  for (int i = 0; i < 10; ++i) batch.push_back(MakeChunk(Bytes(i, 10)));
  ASSERT_TRUE(store->PutBatch(batch).ok());
  std::vector<Fingerprint> seen;
  ASSERT_TRUE(store
                  ->ForEach([&seen](const Fingerprint& fp, const ChunkLocation& loc) {
                    EXPECT_EQ(loc.plain_size, 10u);
                    seen.push_back(fp);
                    return absl::OkStatus();
                  })
                  .ok());
  ASSERT_EQ(seen.size(), 10u);
  EXPECT_TRUE(std::is_sorted(seen.begin(), seen.end()));
  int calls = 0;
  const absl::Status s = store->ForEach([&calls](const Fingerprint&, const ChunkLocation&) {
    return ++calls == 3 ? absl::CancelledError("enough") : absl::OkStatus();
  });
  EXPECT_EQ(s, absl::CancelledError("enough"));
  EXPECT_EQ(calls, 3);
}

class TornTailTest : public ::testing::TestWithParam<std::string> {};

TEST_P(TornTailTest, TornTailIsCutOnOpen) {
  TempDir dir;
  const std::vector<std::string> plains = {Text(1, 2000), Bytes(2, 300)};
  uint64_t valid_end = 0;
  {
    auto store = OpenOrDie(dir.path());
    ASSERT_TRUE(store->PutBatch({MakeChunk(plains[0]), MakeChunk(plains[1])}).ok());
    valid_end = std::filesystem::file_size(PackFile(dir.path(), 1));
  }
  AppendToFile(PackFile(dir.path(), 1), GetParam());
  auto store = OpenOrDie(dir.path());
  EXPECT_EQ(std::filesystem::file_size(PackFile(dir.path(), 1)), valid_end);
  ExpectReadsBack(*store, plains);
  ASSERT_TRUE(store->PutBatch({MakeChunk("after recovery")}).ok());
  ExpectReadsBack(*store, {"after recovery"});
  EXPECT_EQ(store->Locate(Sha256("after recovery"))->offset, valid_end);
}

std::string HalfRecord() {
  const std::string data = Bytes(42, 400);
  RecordHeader h{Codec::kNone, 400, 400, Sha256(data)};
  return EncodeRecord(h, data).substr(0, kRecordHeaderSize + 150);
}

INSTANTIATE_TEST_SUITE_P(Tails, TornTailTest,
                         ::testing::Values(Bytes(9, 1000), std::string(4096, '\0'), "WRC1",
                                           HalfRecord()));

TEST(ChunkStoreTest, WrittenButNotIndexedRecordIsFoundOnOpen) {
  TempDir dir;
  {
    auto store = OpenOrDie(dir.path());
    ASSERT_TRUE(store->PutBatch({MakeChunk("first")}).ok());
  }
  const std::string plain = Text(3, 700);
  const ChunkPut c = MakeChunk(plain);
  uint64_t offset = 0;
  {
    auto writer = PackWriter::OpenForAppend(dir.path() + "/" + kPacksDirName, 1);
    ASSERT_TRUE(writer.ok()) << writer.status();
    RecordHeader h{c.codec, static_cast<uint32_t>(c.plain_size),
                   static_cast<uint32_t>(c.data.size()), c.fingerprint};
    absl::StatusOr<uint64_t> off = (*writer)->Append(h, c.data);
    ASSERT_TRUE(off.ok()) << off.status();
    offset = *off;
    ASSERT_TRUE((*writer)->Sync().ok());
  }
  auto store = OpenOrDie(dir.path());
  ExpectReadsBack(*store, {"first", plain});
  EXPECT_EQ(store->Locate(c.fingerprint)->offset, offset);
  EXPECT_EQ(store->Stats()->chunks, 2u);
}

TEST(ChunkStoreTest, DamageBeforeIndexedRecordsIsNotCutAsATornTail) {
  TempDir dir;
  {
    auto store = OpenOrDie(dir.path());
    ASSERT_TRUE(store->PutBatch({MakeChunk("one")}).ok());
    ASSERT_TRUE(store->PutBatch({MakeChunk("two")}).ok());
  }
  const std::string pack = PackFile(dir.path(), 1);
  const uint64_t size = std::filesystem::file_size(pack);
  FlipByte(pack, kPackHeaderSize + kRecordHeaderSize);  // data of "one"
  auto store = OpenOrDie(dir.path());
  EXPECT_EQ(std::filesystem::file_size(pack), size);  // "two" is still there
  EXPECT_EQ(store->Get(Sha256("one")).status().code(), absl::StatusCode::kDataLoss);
  ExpectReadsBack(*store, {"two"});
  // Appends go on after "two", not over it.
  ASSERT_TRUE(store->PutBatch({MakeChunk("three")}).ok());
  ExpectReadsBack(*store, {"two", "three"});
}

TEST(ChunkStoreTest, TornTailAfterIndexedRecordsIsCutEvenBehindABadRecord) {
  TempDir dir;
  {
    auto store = OpenOrDie(dir.path());
    ASSERT_TRUE(store->PutBatch({MakeChunk("one")}).ok());
  }
  const std::string pack = PackFile(dir.path(), 1);
  const uint64_t size = std::filesystem::file_size(pack);
  const ChunkPut c = MakeChunk("unacknowledged");
  const RecordHeader h{c.codec, static_cast<uint32_t>(c.plain_size),
                       static_cast<uint32_t>(c.data.size()), c.fingerprint};
  {
    std::ofstream out(pack, std::ios::binary | std::ios::app);
    out << EncodeRecord(h, c.data).substr(0, kRecordHeaderSize + 3);  // torn record
  }
  FlipByte(pack, kPackHeaderSize + kRecordHeaderSize);  // and damage inside "one"
  auto store = OpenOrDie(dir.path());
  EXPECT_EQ(std::filesystem::file_size(pack), size);
  EXPECT_EQ(store->Get(c.fingerprint).status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(store->Get(Sha256("one")).status().code(), absl::StatusCode::kDataLoss);
}

TEST(ChunkStoreTest, NewestPackShorterThanItsIndexedRecordsIsReportedNotReused) {
  TempDir dir;
  {
    auto store = OpenOrDie(dir.path());
    ASSERT_TRUE(store->PutBatch({MakeChunk("one")}).ok());
    ASSERT_TRUE(store->PutBatch({MakeChunk("two")}).ok());
  }
  const std::string pack = PackFile(dir.path(), 1);
  std::filesystem::resize_file(pack, std::filesystem::file_size(pack) - 1);
  auto store = OpenOrDie(dir.path());
  ExpectReadsBack(*store, {"one"});
  EXPECT_EQ(store->Get(Sha256("two")).status().code(), absl::StatusCode::kDataLoss);
  ASSERT_TRUE(store->PutBatch({MakeChunk("three")}).ok());
  EXPECT_EQ(store->Locate(Sha256("three"))->pack_id, 2u);  // never appended after a hole
  ExpectReadsBack(*store, {"one", "three"});
}

TEST(ChunkStoreTest, LocatorDisagreeingWithRecordIsDataLoss) {
  TempDir dir;
  ChunkLocation loc;
  {
    auto store = OpenOrDie(dir.path());
    ASSERT_TRUE(store->PutBatch({MakeChunk("abc"), MakeChunk("def")}).ok());
    loc = *store->Locate(Sha256("abc"));
  }
  {
    LocatorDb locator(dir.path());
    rocksdb::DB* db = locator.db;
    ChunkLocation wrong = loc;
    wrong.plain_size = 4;  // same stored size, other plain size
    ASSERT_TRUE(
        db->Put(rocksdb::WriteOptions(), Sha256("abc").ToBytes(), EncodeLocatorValue(wrong)).ok());
    // "def" pointed at "abc"'s record.
    ASSERT_TRUE(
        db->Put(rocksdb::WriteOptions(), Sha256("def").ToBytes(), EncodeLocatorValue(loc)).ok());
  }
  auto store = OpenOrDie(dir.path());
  EXPECT_EQ(store->Get(Sha256("abc")).status().code(), absl::StatusCode::kDataLoss);
  const absl::Status s = store->Get(Sha256("def")).status();
  EXPECT_EQ(s.code(), absl::StatusCode::kDataLoss);
  EXPECT_NE(s.message().find("record holds chunk " + Sha256("abc").ToHex()),
            absl::string_view::npos)
      << s;
}

TEST(ChunkStoreTest, FlippedByteInStoredRecordIsDataLoss) {
  TempDir dir;
  auto store = OpenOrDie(dir.path());
  const std::vector<std::string> plains = {Bytes(1, 100), Bytes(2, 100)};
  ASSERT_TRUE(store->PutBatch({MakeChunk(plains[0]), MakeChunk(plains[1])}).ok());
  const ChunkLocation loc = *store->Locate(Sha256(plains[1]));
  // One byte in the data, then one in the header's fingerprint, then one in the magic.
  for (uint64_t at : {loc.offset + kRecordHeaderSize + 50, loc.offset + 20, loc.offset}) {
    FlipByte(PackFile(dir.path(), 1), at);
    const absl::Status s = store->Get(Sha256(plains[1])).status();
    EXPECT_EQ(s.code(), absl::StatusCode::kDataLoss) << "byte " << at;
    EXPECT_NE(s.message().find("pack 00000001 offset " + std::to_string(loc.offset)),
              absl::string_view::npos)
        << s;
    FlipByte(PackFile(dir.path(), 1), at);  // restore it
    ExpectReadsBack(*store, plains);
  }
}

TEST(ChunkStoreTest, MissingPackFileIsDataLoss) {
  TempDir dir;
  ChunkStoreOptions options;
  options.max_pack_bytes = 100;
  auto store = OpenOrDie(dir.path(), options);
  ASSERT_TRUE(store->PutBatch({MakeChunk(Bytes(1, 200)), MakeChunk(Bytes(2, 200))}).ok());
  ASSERT_EQ(store->Locate(Sha256(Bytes(1, 200)))->pack_id, 1u);
  std::filesystem::remove(PackFile(dir.path(), 1));
  const absl::Status s = store->Get(Sha256(Bytes(1, 200))).status();
  EXPECT_EQ(s.code(), absl::StatusCode::kDataLoss);
  EXPECT_NE(s.message().find(PackFileName(1)), absl::string_view::npos) << s;
}

TEST(ChunkStoreTest, PackRotationCreatesSeveralPacks) {
  TempDir dir;
  ChunkStoreOptions options;
  options.max_pack_bytes = 4096;
  std::vector<std::string> plains;
  for (int i = 0; i < 30; ++i) plains.push_back(Bytes(i, 1000));
  {
    auto store = OpenOrDie(dir.path(), options);
    for (int i = 0; i < 30; i += 5) {
      std::vector<ChunkPut> batch;
      for (int j = i; j < i + 5; ++j) batch.push_back(MakeChunk(plains[j]));
      ASSERT_TRUE(store->PutBatch(batch).ok());
    }
    // 1052-byte records: a pack takes 4 of them (16 + 4 * 1052 >= 4096), so 30 need 8 packs.
    EXPECT_EQ(store->Stats()->packs, 8u);
    ExpectReadsBack(*store, plains);
  }
  for (uint32_t id = 1; id <= 7; ++id) {
    EXPECT_EQ(std::filesystem::file_size(PackFile(dir.path(), id)), 16u + 4 * 1052) << id;
  }
  auto store = OpenOrDie(dir.path(), options);
  EXPECT_EQ(store->Stats()->packs, 8u);
  ExpectReadsBack(*store, plains);
}

TEST(ChunkStoreTest, PackWithBadMagicIsReportedNotServed) {
  for (uint32_t damaged : {1u, 2u}) {  // a closed pack, then the newest
    TempDir dir;
    ChunkStoreOptions options;
    options.max_pack_bytes = 100;
    const std::vector<std::string> plains = {Bytes(1, 200), Bytes(2, 200)};
    {
      auto store = OpenOrDie(dir.path(), options);
      ASSERT_TRUE(store->PutBatch({MakeChunk(plains[0]), MakeChunk(plains[1])}).ok());
    }
    FlipByte(PackFile(dir.path(), damaged), 0);
    const uint64_t pack2_size = std::filesystem::file_size(PackFile(dir.path(), 2));
    auto store = OpenOrDie(dir.path(), options);
    ASSERT_NE(store, nullptr);
    const absl::Status s = store->Get(Sha256(plains[damaged - 1])).status();
    EXPECT_EQ(s.code(), absl::StatusCode::kDataLoss);
    EXPECT_NE(s.message().find(PackFileName(damaged)), absl::string_view::npos) << s;
    EXPECT_NE(s.message().find("bad pack magic"), absl::string_view::npos) << s;
    ExpectReadsBack(*store, {plains[2 - damaged]});
    ASSERT_TRUE(store->PutBatch({MakeChunk("new")}).ok());
    EXPECT_EQ(store->Locate(Sha256("new"))->pack_id, 3u) << damaged;
    EXPECT_EQ(std::filesystem::file_size(PackFile(dir.path(), 2)), pack2_size);
  }
}

TEST(ChunkStoreTest, EmptyNewestPackGetsItsHeaderBack) {
  TempDir dir;
  {
    auto store = OpenOrDie(dir.path());
    ASSERT_TRUE(store->PutBatch({MakeChunk("a")}).ok());
  }
  const std::string pack2 = PackFile(dir.path(), 2);
  { std::ofstream create(pack2); }  // as if a crash followed the file's creation
  auto store = OpenOrDie(dir.path());
  EXPECT_EQ(std::filesystem::file_size(pack2), kPackHeaderSize);
  ASSERT_TRUE(store->PutBatch({MakeChunk("b")}).ok());
  EXPECT_EQ(store->Locate(Sha256("b"))->pack_id, 2u);
  ExpectReadsBack(*store, {"a", "b"});
  EXPECT_EQ(store->Stats()->packs, 2u);
}

TEST(ChunkStoreTest, LocatorValueOfWrongLengthIsDataLoss) {
  TempDir dir;
  { auto store = OpenOrDie(dir.path()); }
  {
    LocatorDb locator(dir.path());
    rocksdb::DB* db = locator.db;
    ASSERT_TRUE(db->Put(rocksdb::WriteOptions(), Sha256("x").ToBytes(), "short").ok());
  }
  auto store = OpenOrDie(dir.path());
  EXPECT_EQ(store->Get(Sha256("x")).status().code(), absl::StatusCode::kDataLoss);
  EXPECT_EQ(store->Contains({Sha256("x")}).status().code(), absl::StatusCode::kDataLoss);
  EXPECT_EQ(store->Stats().status().code(), absl::StatusCode::kDataLoss);
}

TEST(ChunkStoreTest, WriteErrorCutsTheBatchBack) {
  TempDir dir;
  auto store = OpenOrDie(dir.path());
  ASSERT_TRUE(store->PutBatch({MakeChunk("before")}).ok());
  const uint64_t size_before = std::filesystem::file_size(PackFile(dir.path(), 1));
  // A file size limit makes the pack write fail (EFBIG) in the middle of the second record.
  std::vector<ChunkPut> batch;
  for (int i = 0; i < 3; ++i) batch.push_back(MakeChunk(Bytes(i, 10000), Codec::kNone));
  struct rlimit old_limit;
  ASSERT_EQ(::getrlimit(RLIMIT_FSIZE, &old_limit), 0);
  const auto old_handler = ::signal(SIGXFSZ, SIG_IGN);
  struct rlimit limit = old_limit;
  limit.rlim_cur = size_before + 15000;
  ASSERT_EQ(::setrlimit(RLIMIT_FSIZE, &limit), 0);
  const absl::Status s = store->PutBatch(batch);
  ASSERT_EQ(::setrlimit(RLIMIT_FSIZE, &old_limit), 0);
  ::signal(SIGXFSZ, old_handler);
  EXPECT_FALSE(s.ok());
  EXPECT_EQ(std::filesystem::file_size(PackFile(dir.path(), 1)), size_before);
  EXPECT_EQ(store->Stats()->chunks, 1u);
  uint64_t added = 0;
  ASSERT_TRUE(store->PutBatch(batch, &added).ok());
  EXPECT_EQ(added, 3u);
  ExpectReadsBack(*store, {"before", Bytes(0, 10000), Bytes(1, 10000), Bytes(2, 10000)});
}

// A put that would leave less free space than the reserve is refused before anything is
// written (RocksDB's WAL must never be what meets a full disk); reopened with the default
// reserve, the same put succeeds.
TEST(ChunkStoreTest, PutThatWouldEatTheReserveIsRefusedWithNothingWritten) {
  TempDir dir;
  {
    auto store = OpenOrDie(dir.path());
    ASSERT_TRUE(store->PutBatch({MakeChunk("before")}).ok());
  }
  const uint64_t size_before = std::filesystem::file_size(PackFile(dir.path(), 1));
  ChunkStoreOptions options;
  options.reserve_bytes = uint64_t{1} << 62;
  {
    auto store = OpenOrDie(dir.path(), options);
    const absl::Status s = store->PutBatch({MakeChunk("after")});
    EXPECT_EQ(s.code(), absl::StatusCode::kResourceExhausted) << s;
    EXPECT_NE(std::string(s.message()).find("No space left on device: " + dir.path()),
              std::string::npos)
        << s;
    EXPECT_EQ(std::filesystem::file_size(PackFile(dir.path(), 1)), size_before);
    EXPECT_EQ(*store->Contains({MakeChunk("after").fingerprint}), std::vector<bool>{false});
    EXPECT_EQ(store->Stats()->chunks, 1u);
  }
  auto store = OpenOrDie(dir.path());
  ASSERT_TRUE(store->PutBatch({MakeChunk("after")}).ok());
  ExpectReadsBack(*store, {"before", "after"});
}

TEST(ChunkStoreTest, ConcurrentOverlappingPutsStoreEachChunkOnce) {
  TempDir dir;
  ChunkStoreOptions options;
  options.max_pack_bytes = 64 << 10;
  auto store = OpenOrDie(dir.path(), options);
  std::vector<ChunkPut> universe;
  for (int i = 0; i < 60; ++i) universe.push_back(MakeChunk(Text(i, 3000 + i)));
  std::atomic<uint64_t> total_added{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      for (int round = 0; round < 3; ++round) {
        std::vector<ChunkPut> batch;  // thread t puts chunks [10t, 10t + 30): overlapping
        for (int i = 10 * t + 10 * round; i < 10 * t + 10 * round + 10; ++i) {
          batch.push_back(universe[i]);
        }
        uint64_t added = 0;
        EXPECT_TRUE(store->PutBatch(batch, &added).ok());
        total_added += added;
      }
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(total_added, 60u);
  const ChunkStoreStats stats = *store->Stats();
  EXPECT_EQ(stats.chunks, 60u);
  uint64_t want_stored = 0, records = 0;
  for (const auto& c : universe) want_stored += kRecordHeaderSize + c.data.size();
  EXPECT_EQ(stats.stored_bytes, want_stored);
  for (uint32_t id = 1; id <= stats.packs; ++id) {
    const int fd = ::open(PackFile(dir.path(), id).c_str(), O_RDONLY);
    ASSERT_GE(fd, 0);
    absl::StatusOr<PackScan> scan = ScanPack(fd, PackFile(dir.path(), id), 1 << 20);
    ::close(fd);
    ASSERT_TRUE(scan.ok()) << scan.status();
    records += scan->records.size();
  }
  EXPECT_EQ(records, 60u);  // no chunk was appended twice
  for (const auto& c : universe) EXPECT_TRUE(store->Get(c.fingerprint).ok());
}

// Pack damage fixtures (issue 6). The pack-level scan is tested at every offset in pack_test.cc;
// these go through the whole store: reopen, the locator, Get and the next put.

// Appends `plains` to pack `id` as whole, synced records that the locator does not index: the
// state a crash leaves between the pack's fdatasync and the locator write. Returns the end of
// each record.
std::vector<uint64_t> AppendUnindexed(const std::string& dir, uint32_t id,
                                      const std::vector<std::string>& plains) {
  std::vector<uint64_t> ends;
  auto writer = PackWriter::OpenForAppend(dir + "/" + kPacksDirName, id);
  EXPECT_TRUE(writer.ok()) << writer.status();
  if (!writer.ok()) return ends;
  for (const std::string& p : plains) {
    const ChunkPut c = MakeChunk(p, Codec::kNone);
    const RecordHeader h{c.codec, static_cast<uint32_t>(c.plain_size),
                         static_cast<uint32_t>(c.data.size()), c.fingerprint};
    EXPECT_TRUE((*writer)->Append(h, c.data).ok());
    ends.push_back((*writer)->size());
  }
  EXPECT_TRUE((*writer)->Sync().ok());
  return ends;
}

// Every locator entry lies wholly inside its pack file as it is now.
void ExpectLocatorInsidePacks(ChunkStore& store, const std::string& dir, const std::string& what) {
  const absl::Status s = store.ForEach([&](const Fingerprint& fp, const ChunkLocation& loc) {
    const std::string path = PackFile(dir, loc.pack_id);
    const uint64_t size = std::filesystem::exists(path) ? std::filesystem::file_size(path) : 0;
    EXPECT_LE(loc.offset + kRecordHeaderSize + loc.stored_size, size)
        << what << ": entry " << fp.ToHex() << " points past the end of pack " << loc.pack_id;
    return absl::OkStatus();
  });
  EXPECT_TRUE(s.ok()) << s;
}

TEST(ChunkStoreTest, UnindexedTailTruncatedAtEveryOffsetIsRecoveredToWholeRecords) {
  TempDir base;
  const std::vector<std::string> acked = {"acknowledged one", "acknowledged two"};
  const std::vector<std::string> tail = {"tail record a", Bytes(5, 40), "tail c"};
  uint64_t acked_end = 0;
  {
    auto store = OpenOrDie(base.path());
    ASSERT_TRUE(store->PutBatch({MakeChunk(acked[0]), MakeChunk(acked[1])}).ok());
    acked_end = std::filesystem::file_size(PackFile(base.path(), 1));
  }
  const std::vector<uint64_t> ends = AppendUnindexed(base.path(), 1, tail);
  ASSERT_EQ(ends.size(), tail.size());
  for (uint64_t cut = acked_end; cut <= ends.back(); ++cut) {
    const std::string what = "cut at " + std::to_string(cut);
    TempDir dir;
    std::filesystem::copy(base.path(), dir.path(), std::filesystem::copy_options::recursive);
    std::filesystem::resize_file(PackFile(dir.path(), 1), cut);
    auto store = OpenOrDie(dir.path());
    ASSERT_NE(store, nullptr) << what;
    size_t whole = 0;
    while (whole < ends.size() && ends[whole] <= cut) ++whole;
    const uint64_t valid_end = whole == 0 ? acked_end : ends[whole - 1];
    EXPECT_EQ(std::filesystem::file_size(PackFile(dir.path(), 1)), valid_end) << what;
    ExpectReadsBack(*store, acked);
    for (size_t i = 0; i < tail.size(); ++i) {
      const absl::StatusOr<std::string> got = store->Get(Sha256(tail[i]));
      if (i < whole) {
        ASSERT_TRUE(got.ok()) << what << ": " << got.status();
        EXPECT_EQ(*got, tail[i]) << what;
      } else {
        EXPECT_EQ(got.status().code(), absl::StatusCode::kNotFound) << what << ": " << i;
      }
    }
    EXPECT_EQ(store->Stats()->chunks, acked.size() + whole) << what;
    ExpectLocatorInsidePacks(*store, dir.path(), what);
    // The next put appends right after the valid prefix and survives another reopen (that
    // reopen only at every 8th cut and next to record ends, to keep the test quick).
    ASSERT_TRUE(store->PutBatch({MakeChunk("next put")}).ok()) << what;
    EXPECT_EQ(store->Locate(Sha256("next put"))->offset, valid_end) << what;
    if (cut % 8 != 0 && cut - valid_end > 1) continue;
    store.reset();
    store = OpenOrDie(dir.path());
    ExpectReadsBack(*store, {acked[0], acked[1], "next put"});
    ExpectLocatorInsidePacks(*store, dir.path(), what + ", reopened");
  }
}

TEST(ChunkStoreTest, AcknowledgedRecordsTruncatedAtEveryOffsetAreReportedNeverServed) {
  TempDir base;
  const std::vector<std::string> plains = {"first record", Bytes(7, 30), "third"};
  std::vector<uint64_t> ends;
  {
    auto store = OpenOrDie(base.path());
    for (const std::string& p : plains) {
      ASSERT_TRUE(store->PutBatch({MakeChunk(p, Codec::kNone)}).ok());
      ends.push_back(std::filesystem::file_size(PackFile(base.path(), 1)));
    }
  }
  // Cuts inside the last two records (the first stays whole).
  for (uint64_t cut = ends[0]; cut < ends.back(); ++cut) {
    const std::string what = "cut at " + std::to_string(cut);
    TempDir dir;
    std::filesystem::copy(base.path(), dir.path(), std::filesystem::copy_options::recursive);
    std::filesystem::resize_file(PackFile(dir.path(), 1), cut);
    auto store = OpenOrDie(dir.path());
    ASSERT_NE(store, nullptr) << what;
    EXPECT_EQ(std::filesystem::file_size(PackFile(dir.path(), 1)), cut) << what;  // left alone
    for (size_t i = 0; i < plains.size(); ++i) {
      const absl::StatusOr<std::string> got = store->Get(Sha256(plains[i]));
      if (ends[i] <= cut) {
        ASSERT_TRUE(got.ok()) << what << ": " << got.status();
        EXPECT_EQ(*got, plains[i]);
      } else {
        EXPECT_EQ(got.status().code(), absl::StatusCode::kDataLoss) << what << ": " << i;
      }
    }
    // New records never go into the damaged pack, where the locator still names lost offsets.
    ASSERT_TRUE(store->PutBatch({MakeChunk("after damage")}).ok()) << what;
    EXPECT_EQ(store->Locate(Sha256("after damage"))->pack_id, 2u) << what;
    if (cut % 8 != 0) continue;  // the reopen at every 8th cut, to keep the test quick
    store.reset();
    store = OpenOrDie(dir.path());
    ExpectReadsBack(*store, {plains[0], "after damage"});
    EXPECT_EQ(store->Get(Sha256(plains[2])).status().code(), absl::StatusCode::kDataLoss) << what;
  }
}

TEST(ChunkStoreTest, MissingNewestPackIdIsNeverReused) {
  TempDir dir;
  ChunkStoreOptions options;
  options.max_pack_bytes = 100;
  const std::string lost = Bytes(2, 200);
  {
    auto store = OpenOrDie(dir.path(), options);
    ASSERT_TRUE(store->PutBatch({MakeChunk(Bytes(1, 200)), MakeChunk(lost)}).ok());
    ASSERT_EQ(store->Locate(Sha256(lost))->pack_id, 2u);
  }
  std::filesystem::remove(PackFile(dir.path(), 2));
  {
    auto store = OpenOrDie(dir.path(), options);
    ASSERT_NE(store, nullptr);
    EXPECT_EQ(store->Get(Sha256(lost)).status().code(), absl::StatusCode::kDataLoss);
    ExpectReadsBack(*store, {Bytes(1, 200)});
    // A new pack 2 would put a new record where the locator still places the lost chunk.
    ASSERT_TRUE(store->PutBatch({MakeChunk("new")}).ok());
    EXPECT_EQ(store->Locate(Sha256("new"))->pack_id, 3u);
    EXPECT_FALSE(std::filesystem::exists(PackFile(dir.path(), 2)));
  }
  auto store = OpenOrDie(dir.path(), options);
  ExpectReadsBack(*store, {Bytes(1, 200), "new"});
  EXPECT_EQ(store->Get(Sha256(lost)).status().code(), absl::StatusCode::kDataLoss);
}

uint64_t IndexedEndOf(const std::string& store_dir, uint32_t id);  // below

TEST(ChunkStoreTest, ClosedPackRecordsPastTheIndexedEndAreIndexedAtOpen) {
  // A batch that rotated into a new pack and died before its locator write (or whose unsynced
  // locator write a power loss took): its records sit, synced but unindexed, in a pack that is
  // no longer the newest. The open indexes them where they are.
  TempDir dir;
  const std::string packs = dir.path() + "/" + kPacksDirName;
  {
    auto store = OpenOrDie(dir.path());
    ASSERT_TRUE(store->PutBatch({MakeChunk("a")}).ok());
  }
  ASSERT_TRUE(PackWriter::Create(packs, 2).ok());
  const std::vector<uint64_t> ends = AppendUnindexed(dir.path(), 2, {"orphan one", "orphan two"});
  ASSERT_EQ(ends.size(), 2u);
  ASSERT_TRUE(PackWriter::Create(packs, 3).ok());
  {
    auto store = OpenOrDie(dir.path());
    ASSERT_NE(store, nullptr);
    EXPECT_EQ(*store->Contains({Sha256("orphan one"), Sha256("orphan two"), Sha256("a")}),
              (std::vector<bool>{true, true, true}));
    EXPECT_EQ(store->Locate(Sha256("orphan one"))->pack_id, 2u);
    EXPECT_EQ(store->Locate(Sha256("orphan one"))->offset, kPackHeaderSize);
    EXPECT_EQ(store->Locate(Sha256("orphan two"))->offset, ends[0]);
    ExpectReadsBack(*store, {"a", "orphan one", "orphan two"});
    // Stored already: a put of them writes nothing.
    uint64_t added = 99;
    ASSERT_TRUE(store->PutBatch({MakeChunk("orphan one"), MakeChunk("orphan two")}, &added).ok());
    EXPECT_EQ(added, 0u);
    EXPECT_EQ(store->CheckPacks()->size(), 0u);
    ExpectLocatorInsidePacks(*store, dir.path(), "orphan pack");
  }
  // Indexed once: the pack's end moved past them (the next open scans nothing there), and the
  // file was left as it was.
  EXPECT_EQ(IndexedEndOf(dir.path(), 2), ends[1]);
  EXPECT_EQ(std::filesystem::file_size(PackFile(dir.path(), 2)), ends[1]);
}

TEST(ChunkStoreTest, ClosedPackTailStopsAtABadRecordAndIsNeverCut) {
  // Whole records, then bytes that are not one: the records are indexed, the bytes after them
  // stay (a closed pack is never modified) and are not taken for a record.
  TempDir dir;
  const std::string packs = dir.path() + "/" + kPacksDirName;
  {
    auto store = OpenOrDie(dir.path());
    ASSERT_TRUE(store->PutBatch({MakeChunk("a")}).ok());
  }
  AppendUnindexed(dir.path(), 1, {"past the end"});
  AppendToFile(PackFile(dir.path(), 1), std::string(100, 'x'));
  const uint64_t size = std::filesystem::file_size(PackFile(dir.path(), 1));
  ASSERT_TRUE(PackWriter::Create(packs, 2).ok());
  for (int round = 0; round < 2; ++round) {
    auto store = OpenOrDie(dir.path());
    ASSERT_NE(store, nullptr);
    ExpectReadsBack(*store, {"a", "past the end"});
    EXPECT_EQ(store->Stats()->chunks, 2u);
    EXPECT_EQ(std::filesystem::file_size(PackFile(dir.path(), 1)), size);
  }
}

// With sync_locator false a power loss may take the locator writes of the last puts, never
// their records (synced first). Simulated by putting back the locator as it was before them:
// the open indexes every record again, in closed packs as in the newest.
TEST(ChunkStoreTest, LocatorWritesAPowerLossTookAreIndexedAgainFromThePacks) {
  TempDir dir;
  ChunkStoreOptions options;
  options.max_pack_bytes = 100;
  options.sync_locator = false;
  const std::string locator = dir.path() + "/" + kLocatorDirName;
  const std::string saved = dir.path() + "/locator.before";
  {
    auto store = OpenOrDie(dir.path(), options);
    ASSERT_TRUE(store->PutBatch({MakeChunk("a")}).ok());
    ASSERT_TRUE(store->Sync().ok());
  }
  std::filesystem::copy(locator, saved, std::filesystem::copy_options::recursive);
  const std::vector<std::string> plains = {Bytes(1, 200), Bytes(2, 200), Bytes(3, 200)};
  {
    auto store = OpenOrDie(dir.path(), options);
    for (const std::string& p : plains) ASSERT_TRUE(store->PutBatch({MakeChunk(p)}).ok());
    EXPECT_EQ(store->Locate(Sha256(plains[2]))->pack_id, 3u);
  }
  std::filesystem::remove_all(locator);
  std::filesystem::rename(saved, locator);
  {
    auto store = OpenOrDie(dir.path(), options);
    ASSERT_NE(store, nullptr);
    ExpectReadsBack(*store, {"a", plains[0], plains[1], plains[2]});
    EXPECT_EQ(store->Locate(Sha256(plains[0]))->pack_id, 1u);
    EXPECT_EQ(store->Locate(Sha256(plains[1]))->pack_id, 2u);
    EXPECT_EQ(store->Locate(Sha256(plains[2]))->pack_id, 3u);
    EXPECT_EQ(store->Stats()->chunks, 4u);
    EXPECT_EQ(store->CheckPacks()->size(), 0u);
    uint64_t added = 99;
    ASSERT_TRUE(store->PutBatch({MakeChunk(plains[1])}, &added).ok());
    EXPECT_EQ(added, 0u);
  }
  ChunkStoreOptions read_only = options;
  read_only.read_only = true;
  auto store = OpenOrDie(dir.path(), read_only);
  EXPECT_EQ(store->Sync().code(), absl::StatusCode::kFailedPrecondition);
  ExpectReadsBack(*store, {"a", plains[0], plains[1], plains[2]});
}

// The end pack_ends holds for pack `id` (0 if none).
uint64_t IndexedEndOf(const std::string& store_dir, uint32_t id) {
  LocatorDb db(store_dir);
  const char key[4] = {static_cast<char>(id >> 24), static_cast<char>(id >> 16),
                       static_cast<char>(id >> 8), static_cast<char>(id)};
  std::string v;
  const rocksdb::Status s =
      db.db->Get(rocksdb::ReadOptions(), db.handles[1], rocksdb::Slice(key, 4), &v);
  if (!s.ok() || v.size() != 8) return 0;
  uint64_t end = 0;
  for (size_t i = 8; i-- > 0;) end = end << 8 | static_cast<uint8_t>(v[i]);
  return end;
}

// Unsynced puts leave the packs' ends where the last Sync put them, so a power loss that takes
// any of their entries, not only the WAL's last ones, leaves the records past the durable end:
// simulated by deleting the entry of a put between two that stay.
TEST(ChunkStoreTest, UnsyncedPutsLeaveThePackEndsToSyncAndAHoleInTheirEntriesIsIndexedAgain) {
  TempDir dir;
  ChunkStoreOptions options;
  options.sync_locator = false;
  const std::vector<std::string> plains = {Bytes(21, 3000), Bytes(22, 3000), Bytes(23, 3000)};
  {
    auto store = OpenOrDie(dir.path(), options);
    ASSERT_TRUE(store->PutBatch({MakeChunk("a")}).ok());
    ASSERT_TRUE(store->Sync().ok());
    ASSERT_TRUE(store->Sync().ok());  // nothing since: a no-op
  }
  const uint64_t synced = std::filesystem::file_size(PackFile(dir.path(), 1));
  EXPECT_EQ(IndexedEndOf(dir.path(), 1), synced);
  {
    auto store = OpenOrDie(dir.path(), options);
    for (const std::string& p : plains) ASSERT_TRUE(store->PutBatch({MakeChunk(p)}).ok());
  }  // closed without Sync, as by a kill
  EXPECT_EQ(IndexedEndOf(dir.path(), 1), synced);
  {
    LocatorDb db(dir.path());
    const Fingerprint lost = Sha256(plains[1]);
    ASSERT_TRUE(db.db
                    ->Delete(rocksdb::WriteOptions(), db.handles[0],
                             rocksdb::Slice(reinterpret_cast<const char*>(lost.bytes.data()),
                                            Fingerprint::kSize))
                    .ok());
  }
  {
    auto store = OpenOrDie(dir.path(), options);
    ASSERT_NE(store, nullptr);
    ExpectReadsBack(*store, {"a", plains[0], plains[1], plains[2]});
    EXPECT_EQ(store->Locate(Sha256(plains[1]))->pack_id, 1u);
    EXPECT_EQ(store->Stats()->chunks, 4u);
    EXPECT_EQ(store->CheckPacks()->size(), 0u);
  }
  // The open's re-index moved the end (synced); a put and its Sync move it again.
  EXPECT_EQ(IndexedEndOf(dir.path(), 1), std::filesystem::file_size(PackFile(dir.path(), 1)));
  {
    auto store = OpenOrDie(dir.path(), options);
    ASSERT_TRUE(store->PutBatch({MakeChunk(Bytes(24, 3000))}).ok());
    ASSERT_TRUE(store->Sync().ok());
  }
  EXPECT_EQ(IndexedEndOf(dir.path(), 1), std::filesystem::file_size(PackFile(dir.path(), 1)));
}

// How a pack file is damaged, and a phrase the store's message about it must hold.
struct PackDamage {
  const char* name;
  std::function<void(const std::string& path)> apply;
  const char* phrase;
};

std::vector<PackDamage> PackDamages() {
  auto overwrite = [](uint64_t offset, std::string bytes) {
    return [offset, bytes](const std::string& path) {
      std::fstream f(path, std::ios::binary | std::ios::in | std::ios::out);
      f.seekp(static_cast<std::streamoff>(offset));
      f.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
      ASSERT_TRUE(f.good()) << path;
    };
  };
  return {
      {"zero length", [](const std::string& p) { std::filesystem::resize_file(p, 0); },
       "empty pack file (0 bytes)"},
      {"header cut", [](const std::string& p) { std::filesystem::resize_file(p, 10); },
       "pack header incomplete (10 bytes)"},
      {"bad magic", overwrite(0, "WHORLPAX"), "bad pack magic"},
      {"unknown version", overwrite(8, std::string("\x04\0\0\0", 4)), "unknown pack version 4"},
      {"nonzero reserved", overwrite(12, "x"), "nonzero reserved field in pack header"},
  };
}

// Three packs of one 200-byte chunk each (max_pack_bytes 100); returns their plain bytes.
std::vector<std::string> ThreePacks(const std::string& dir, const ChunkStoreOptions& options) {
  const std::vector<std::string> plains = {Bytes(1, 200), Bytes(2, 200), Bytes(3, 200)};
  auto store = OpenOrDie(dir, options);
  EXPECT_TRUE(
      store->PutBatch({MakeChunk(plains[0]), MakeChunk(plains[1]), MakeChunk(plains[2])}).ok());
  for (uint32_t id = 1; id <= 3; ++id) {
    EXPECT_EQ(store->Locate(Sha256(plains[id - 1]))->pack_id, id);
  }
  return plains;
}

void ExpectOneProblem(ChunkStore& store, uint32_t pack_id, const std::string& phrase,
                      const std::vector<std::string>& lost, const std::string& what) {
  absl::StatusOr<std::vector<PackProblem>> problems = store.CheckPacks();
  ASSERT_TRUE(problems.ok()) << what << ": " << problems.status();
  ASSERT_EQ(problems->size(), 1u) << what;
  const PackProblem& p = problems->front();
  EXPECT_EQ(p.pack_id, pack_id) << what;
  EXPECT_NE(p.problem.find(PackFileName(pack_id)), std::string::npos) << what << ": " << p.problem;
  EXPECT_NE(p.problem.find(phrase), std::string::npos) << what << ": " << p.problem;
  std::set<Fingerprint> want;
  for (const std::string& l : lost) want.insert(Sha256(l));
  EXPECT_EQ(std::set<Fingerprint>(p.lost.begin(), p.lost.end()), want) << what;
}

// A damaged closed pack is handled like a missing one: the store opens, the other packs serve,
// Get of its chunks is DATA_LOSS naming the file, CheckPacks reports it, and it is never
// appended to.
TEST(ChunkStoreTest, DamagedClosedPackIsReportedNeverServedAndOpenSucceeds) {
  for (const PackDamage& damage : PackDamages()) {
    TempDir dir;
    ChunkStoreOptions options;
    options.max_pack_bytes = 100;
    const std::vector<std::string> plains = ThreePacks(dir.path(), options);
    const std::string pack1 = PackFile(dir.path(), 1);
    damage.apply(pack1);
    const uint64_t damaged_size = std::filesystem::file_size(pack1);
    for (int reopen = 0; reopen < 2; ++reopen) {
      const std::string what = std::string(damage.name) + (reopen ? ", reopened" : "");
      auto store = OpenOrDie(dir.path(), options);
      ASSERT_NE(store, nullptr) << what;
      const absl::Status s = store->Get(Sha256(plains[0])).status();
      EXPECT_EQ(s.code(), absl::StatusCode::kDataLoss) << what;
      EXPECT_NE(s.message().find(PackFileName(1)), absl::string_view::npos) << what << ": " << s;
      EXPECT_NE(s.message().find(damage.phrase), absl::string_view::npos) << what << ": " << s;
      ExpectReadsBack(*store, {plains[1], plains[2]});
      ExpectOneProblem(*store, 1, damage.phrase, {plains[0]}, what);
      const std::string fresh = "after damage " + std::to_string(reopen);
      ASSERT_TRUE(store->PutBatch({MakeChunk(fresh)}).ok()) << what;
      EXPECT_GE(store->Locate(Sha256(fresh))->pack_id, 3u) << what;
      EXPECT_EQ(std::filesystem::file_size(pack1), damaged_size) << what;  // left alone
    }
  }
}

TEST(ChunkStoreTest, ZeroLengthNewestPackWithIndexedRecordsIsReportedNotReused) {
  TempDir dir;
  ChunkStoreOptions options;
  options.max_pack_bytes = 100;
  const std::vector<std::string> plains = ThreePacks(dir.path(), options);
  std::filesystem::resize_file(PackFile(dir.path(), 3), 0);
  {
    auto store = OpenOrDie(dir.path(), options);
    ASSERT_NE(store, nullptr);
    const absl::Status s = store->Get(Sha256(plains[2])).status();
    EXPECT_EQ(s.code(), absl::StatusCode::kDataLoss);
    EXPECT_NE(s.message().find(PackFileName(3)), absl::string_view::npos) << s;
    ExpectReadsBack(*store, {plains[0], plains[1]});
    ExpectOneProblem(*store, 3, "empty pack file (0 bytes)", {plains[2]}, "newest");
    // Not rewritten as an empty pack (its records were acknowledged), never appended to.
    ASSERT_TRUE(store->PutBatch({MakeChunk("new")}).ok());
    EXPECT_EQ(store->Locate(Sha256("new"))->pack_id, 4u);
    EXPECT_EQ(std::filesystem::file_size(PackFile(dir.path(), 3)), 0u);
  }
  auto store = OpenOrDie(dir.path(), options);
  ExpectReadsBack(*store, {plains[0], plains[1], "new"});
  EXPECT_EQ(store->Get(Sha256(plains[2])).status().code(), absl::StatusCode::kDataLoss);
  ExpectOneProblem(*store, 3, "empty pack file (0 bytes)", {plains[2]}, "reopened");
}

TEST(ChunkStoreTest, NewestPackWithForeignHeaderAndNothingIndexedIsLeftAlone) {
  TempDir dir;
  {
    auto store = OpenOrDie(dir.path());
    ASSERT_TRUE(store->PutBatch({MakeChunk("a")}).ok());
  }
  const std::string pack2 = PackFile(dir.path(), 2);
  const std::string foreign = "NOTAPACK" + std::string(40, 'x');
  AppendToFile(pack2, foreign);
  auto store = OpenOrDie(dir.path());
  ASSERT_NE(store, nullptr);
  ExpectOneProblem(*store, 2, "bad pack magic", {}, "foreign");
  ASSERT_TRUE(store->PutBatch({MakeChunk("b")}).ok());
  EXPECT_EQ(store->Locate(Sha256("b"))->pack_id, 3u);
  ExpectReadsBack(*store, {"a", "b"});
  EXPECT_EQ(std::filesystem::file_size(pack2), foreign.size());
}

TEST(ChunkStoreTest, CheckPacksOfASoundStoreIsEmpty) {
  TempDir dir;
  ChunkStoreOptions options;
  options.max_pack_bytes = 100;
  ThreePacks(dir.path(), options);
  auto store = OpenOrDie(dir.path(), options);
  absl::StatusOr<std::vector<PackProblem>> problems = store->CheckPacks();
  ASSERT_TRUE(problems.ok()) << problems.status();
  EXPECT_TRUE(problems->empty());
}

TEST(ChunkStoreTest, CheckPacksReportsAMissingPackWhileOpenUntilItsChunksAreForgotten) {
  TempDir dir;
  ChunkStoreOptions options;
  options.max_pack_bytes = 100;
  const std::vector<std::string> plains = ThreePacks(dir.path(), options);
  auto store = OpenOrDie(dir.path(), options);
  std::filesystem::remove(PackFile(dir.path(), 2));
  ExpectOneProblem(*store, 2, "pack file missing", {plains[1]}, "missing");
  const absl::Status s = store->Get(Sha256(plains[1])).status();
  EXPECT_EQ(s.code(), absl::StatusCode::kDataLoss);
  EXPECT_NE(s.message().find(PackFileName(2)), absl::string_view::npos) << s;
  store.reset();
  store = OpenOrDie(dir.path(), options);
  ExpectOneProblem(*store, 2, "pack file missing", {plains[1]}, "missing, reopened");
  ExpectReadsBack(*store, {plains[0], plains[2]});
  // Repair's forgetting: the pack is still named, but nothing is lost with it any more, and
  // the chunk put again lands in a new pack.
  ASSERT_TRUE(store->Forget({Sha256(plains[1])}).ok());
  ExpectOneProblem(*store, 2, "pack file missing", {}, "after the forget");
  ASSERT_TRUE(store->PutBatch({MakeChunk(plains[1])}).ok());
  EXPECT_GT(store->Locate(Sha256(plains[1]))->pack_id, 3u);
  store.reset();
  store = OpenOrDie(dir.path(), options);
  ExpectReadsBack(*store, plains);
}

// Repair's forgetting: a damaged chunk's entry goes (an absent one is skipped), Get says
// NOT_FOUND instead of DATA_LOSS, the next put writes the chunk anew, and all of it holds after
// a reopen.
TEST(ChunkStoreTest, ForgetDropsADamagedChunkAndTheNextPutStoresItAgain) {
  TempDir dir;
  const std::vector<std::string> plains = {Text(1, 900), Text(2, 900)};
  const Fingerprint a = Sha256(plains[0]);
  {
    auto store = OpenOrDie(dir.path());
    ASSERT_TRUE(store->PutBatch({MakeChunk(plains[0]), MakeChunk(plains[1])}).ok());
    const ChunkLocation before = *store->Locate(a);
    FlipByte(PackFile(dir.path(), 1), before.offset + kRecordHeaderSize + 10);
    ASSERT_EQ(store->Get(a).status().code(), absl::StatusCode::kDataLoss);
    ASSERT_TRUE(store->Forget({a, Sha256("never stored")}).ok());
    EXPECT_EQ(store->Get(a).status().code(), absl::StatusCode::kNotFound);
    EXPECT_EQ(*store->Contains({a, Sha256(plains[1])}), (std::vector<bool>{false, true}));
    EXPECT_EQ(store->Stats()->chunks, 1u);
    uint64_t added = 0;
    ASSERT_TRUE(store->PutBatch({MakeChunk(plains[0])}, &added).ok());
    EXPECT_EQ(added, 1u);
    EXPECT_GT(store->Locate(a)->offset, before.offset);
    ExpectReadsBack(*store, plains);
    EXPECT_TRUE(store->Forget({}).ok());
  }
  auto store = OpenOrDie(dir.path());
  ExpectReadsBack(*store, plains);
  ChunkStoreOptions read_only;
  read_only.read_only = true;
  store.reset();
  store = OpenOrDie(dir.path(), read_only);
  EXPECT_EQ(store->Forget({a}).code(), absl::StatusCode::kFailedPrecondition);
  ExpectReadsBack(*store, plains);
}

TEST(ChunkStoreTest, CheckPacksNamesOnlyTheChunksPastACutInAClosedPack) {
  TempDir dir;
  ChunkStoreOptions options;
  options.max_pack_bytes = 250;  // the four short records fit (16 + 60 + 60 + 63 < 250)
  const std::vector<std::string> plains = {"kept one", "kept two", "cut in half", "after it"};
  ChunkLocation cut;
  {
    auto store = OpenOrDie(dir.path(), options);
    for (const std::string& p : plains) {
      ASSERT_TRUE(store->PutBatch({MakeChunk(p, Codec::kNone)}).ok());
    }
    ASSERT_TRUE(store->PutBatch({MakeChunk(Bytes(9, 300))}).ok());
    ASSERT_EQ(store->Locate(Sha256(Bytes(9, 300)))->pack_id, 2u);
    cut = *store->Locate(Sha256(plains[2]));
    ASSERT_EQ(cut.pack_id, 1u);
  }
  std::filesystem::resize_file(PackFile(dir.path(), 1), cut.offset + 10);
  auto store = OpenOrDie(dir.path(), options);
  ASSERT_NE(store, nullptr);
  ExpectOneProblem(*store, 1,
                   std::to_string(cut.offset + 10) + " bytes, but its indexed records end at",
                   {plains[2], plains[3]}, "cut");
  ExpectReadsBack(*store, {plains[0], plains[1], Bytes(9, 300)});
  for (int i : {2, 3}) {
    const absl::Status s = store->Get(Sha256(plains[i])).status();
    EXPECT_EQ(s.code(), absl::StatusCode::kDataLoss) << i;
    EXPECT_NE(s.message().find(PackFileName(1)), absl::string_view::npos) << s;
  }
}

TEST(ChunkStoreTest, NewestPackCutInsideItsLastAcknowledgedRecordIsReported) {
  TempDir dir;
  ChunkStoreOptions options;
  options.max_pack_bytes = 100;
  const std::vector<std::string> plains = ThreePacks(dir.path(), options);
  const std::string pack3 = PackFile(dir.path(), 3);
  const uint64_t cut = std::filesystem::file_size(pack3) - 100;  // inside its only record
  std::filesystem::resize_file(pack3, cut);
  auto store = OpenOrDie(dir.path(), options);
  ASSERT_NE(store, nullptr);
  EXPECT_EQ(std::filesystem::file_size(pack3), cut);  // left alone, not cut back as a torn tail
  ExpectOneProblem(*store, 3, std::to_string(cut) + " bytes, but its indexed records end at",
                   {plains[2]}, "newest cut");
  EXPECT_EQ(store->Get(Sha256(plains[2])).status().code(), absl::StatusCode::kDataLoss);
  ExpectReadsBack(*store, {plains[0], plains[1]});
  ASSERT_TRUE(store->PutBatch({MakeChunk("new")}).ok());
  EXPECT_EQ(store->Locate(Sha256("new"))->pack_id, 4u);
}

// A bundle of `parts` encoded with `codec` (zstd falls back to none if it does not help).
ChunkPut MakeBundle(const std::vector<std::string>& parts, Codec codec = Codec::kZstd) {
  ChunkPut c;
  for (const std::string& p : parts) {
    c.members.push_back({Sha256(p), static_cast<uint32_t>(p.size())});
  }
  std::string plain = EncodeBundleTable(c.members);
  for (const std::string& p : parts) plain += p;
  c.plain_size = plain.size();
  c.data = Encode(CompressionSpec{codec, 3}, plain, &c.codec);
  return c;
}

uint32_t PackVersionOf(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::string header(kPackHeaderSize, '\0');
  in.read(header.data(), static_cast<std::streamsize>(header.size()));
  absl::StatusOr<uint32_t> v = CheckPackHeader(header);
  EXPECT_TRUE(v.ok()) << v.status();
  return v.ok() ? *v : 0;
}

TEST(ChunkStoreTest, BundleMembersReadBackAfterReopenFromAVersion2Pack) {
  TempDir dir;
  const std::vector<std::string> parts = {Text(1, 3000), "", Text(2, 5000), Bytes(3, 700)};
  const ChunkPut bundle = MakeBundle(parts);
  ASSERT_EQ(bundle.codec, Codec::kZstd);
  {
    auto store = OpenOrDie(dir.path());
    ASSERT_TRUE(store->PutBatch({MakeChunk("single")}).ok());
    uint64_t added = 0;
    ASSERT_TRUE(store->PutBatch({bundle}, &added).ok());
    EXPECT_EQ(added, 4u);
    ExpectReadsBack(*store, parts);
  }
  auto store = OpenOrDie(dir.path());
  ExpectReadsBack(*store, parts);
  ExpectReadsBack(*store, {"single"});
  // Pack 1 is version 1 and keeps its plain record; the bundle started version 2 pack 2.
  EXPECT_EQ(PackVersionOf(PackFile(dir.path(), 1)), 1u);
  EXPECT_EQ(PackVersionOf(PackFile(dir.path(), 2)), 2u);
  const ChunkLocation a = *store->Locate(Sha256(parts[0]));
  const ChunkLocation c = *store->Locate(Sha256(parts[2]));
  EXPECT_TRUE(a.bundled);
  EXPECT_EQ(a.pack_id, 2u);
  EXPECT_EQ(c.offset, a.offset);
  EXPECT_EQ(a.inner_offset, BundleTableSize(4));
  EXPECT_EQ(c.inner_offset, BundleTableSize(4) + 3000);
  EXPECT_EQ(c.plain_size, 5000u);
  EXPECT_FALSE(store->Locate(Sha256("single"))->bundled);
  // The members' shares add up to the record; the single chunk counts its own record.
  const ChunkStoreStats stats = *store->Stats();
  EXPECT_EQ(stats.chunks, 5u);
  EXPECT_EQ(stats.stored_bytes,
            2 * kRecordHeaderSize + MakeChunk("single").data.size() + bundle.data.size());
  EXPECT_EQ(stats.plain_bytes, 6 + 3000 + 5000 + 700u);
  // Later single chunks go to the version 2 pack too.
  ASSERT_TRUE(store->PutBatch({MakeChunk("later")}).ok());
  EXPECT_EQ(store->Locate(Sha256("later"))->pack_id, 2u);
}

// The first LZ4 record starts a version 3 pack; every later record goes to version 3 packs, and
// all of them read back after a reopen.
TEST(ChunkStoreTest, Lz4RecordStartsAVersion3Pack) {
  TempDir dir;
  const std::vector<std::string> parts = {Text(4, 3000), Text(5, 2000)};
  const std::string big = Text(6, 20000);
  const ChunkPut lz4 = MakeChunk(big, Codec::kLz4);
  ASSERT_EQ(lz4.codec, Codec::kLz4);
  {
    auto store = OpenOrDie(dir.path());
    ASSERT_TRUE(store->PutBatch({MakeChunk("single")}).ok());
    ASSERT_TRUE(store->PutBatch({MakeBundle(parts)}).ok());
    ASSERT_TRUE(store->PutBatch({lz4, MakeChunk("after")}).ok());
    ASSERT_TRUE(store->PutBatch({MakeBundle({Text(7, 100), Text(8, 200)})}).ok());
  }
  auto store = OpenOrDie(dir.path());
  EXPECT_EQ(PackVersionOf(PackFile(dir.path(), 1)), 1u);
  EXPECT_EQ(PackVersionOf(PackFile(dir.path(), 2)), 2u);
  EXPECT_EQ(PackVersionOf(PackFile(dir.path(), 3)), 3u);
  EXPECT_FALSE(std::filesystem::exists(PackFile(dir.path(), 4)));
  const ChunkLocation loc = *store->Locate(Sha256(big));
  EXPECT_EQ(loc.pack_id, 3u);
  EXPECT_EQ(loc.codec, Codec::kLz4);
  EXPECT_EQ(loc.stored_size, lz4.data.size());
  EXPECT_EQ(store->Locate(Sha256("after"))->pack_id, 3u);
  EXPECT_EQ(store->Locate(Sha256(Text(7, 100)))->pack_id, 3u);
  ExpectReadsBack(*store, {big, "single", "after", Text(7, 100), Text(8, 200)});
  ExpectReadsBack(*store, parts);
}

// check --read-data reads in this order: each pack front to back, a bundle's members together.
TEST(ChunkStoreTest, ListInPackOrderFollowsPacksAndBundlesNotFingerprints) {
  TempDir dir;
  ChunkStoreOptions options;
  options.max_pack_bytes = 4096;  // a new pack every batch or two
  auto store = OpenOrDie(dir.path(), options);
  std::vector<std::string> written;
  for (int b = 0; b < 6; ++b) {
    std::vector<std::string> parts = {Text(10 * b + 1, 1500), Bytes(10 * b + 2, 1200)};
    std::vector<ChunkPut> batch = {MakeChunk(parts[0]), MakeChunk(parts[1])};
    written.insert(written.end(), parts.begin(), parts.end());
    if (b % 2 == 1) {
      const std::vector<std::string> members = {Text(10 * b + 3, 300), Text(10 * b + 4, 200),
                                                Text(10 * b + 5, 100)};
      batch.push_back(MakeBundle(members));
      written.insert(written.end(), members.begin(), members.end());
    }
    ASSERT_TRUE(store->PutBatch(batch).ok());
  }
  ASSERT_GE(store->Stats()->packs, 3u);
  absl::StatusOr<std::vector<Fingerprint>> listed = store->ListInPackOrder();
  ASSERT_TRUE(listed.ok()) << listed.status();
  std::vector<Fingerprint> want;
  for (const std::string& p : written) want.push_back(Sha256(p));
  EXPECT_EQ(*listed, want);
  std::vector<Fingerprint> by_fp = want;
  std::sort(by_fp.begin(), by_fp.end());
  EXPECT_NE(*listed, by_fp);  // the order is not the locator's
}

TEST(ChunkStoreTest, BundleIndexesOnlyItsNewMembersAndIsSkippedWhenNoneIs) {
  TempDir dir;
  auto store = OpenOrDie(dir.path());
  ASSERT_TRUE(store->PutBatch({MakeChunk(Text(1, 900))}).ok());
  const ChunkLocation single = *store->Locate(Sha256(Text(1, 900)));
  uint64_t added = 0;
  // Text(2) also comes alone earlier in the same batch: it is indexed there, once.
  ASSERT_TRUE(store
                  ->PutBatch({MakeChunk(Text(2, 800)),
                              MakeBundle({Text(1, 900), Text(2, 800), Text(3, 700)})},
                             &added)
                  .ok());
  EXPECT_EQ(added, 2u);
  EXPECT_EQ(store->Locate(Sha256(Text(1, 900)))->offset, single.offset);
  EXPECT_FALSE(store->Locate(Sha256(Text(2, 800)))->bundled);
  EXPECT_TRUE(store->Locate(Sha256(Text(3, 700)))->bundled);
  ExpectReadsBack(*store, {Text(1, 900), Text(2, 800), Text(3, 700)});
  const auto size = std::filesystem::file_size(PackFile(dir.path(), 2));
  ASSERT_TRUE(store->PutBatch({MakeBundle({Text(3, 700), Text(1, 900)})}, &added).ok());
  EXPECT_EQ(added, 0u);
  EXPECT_EQ(std::filesystem::file_size(PackFile(dir.path(), 2)), size);
}

// serve_cached_members: a chunk a decoded bundle holds is read from there, not through its
// locator entry; without it (the default, what check and repair use) every read goes to the
// record its entry names. Text(1) is stored alone (its entry) and in a bundle beside Text(2).
TEST(ChunkStoreTest, CachedMembersAreServedOnlyWhenAskedAndNeverPastForgetDecoded) {
  for (const bool serve : {false, true}) {
    SCOPED_TRACE(serve);
    TempDir dir;
    ChunkStoreOptions options;
    options.serve_cached_members = serve;
    auto store = OpenOrDie(dir.path(), options);
    const Fingerprint alone = Sha256(Text(1, 900));
    ASSERT_TRUE(store->PutBatch({MakeChunk(Text(1, 900))}).ok());
    ASSERT_TRUE(store->PutBatch({MakeBundle({Text(2, 800), Text(1, 900)})}).ok());
    const ChunkLocation single = *store->Locate(alone);
    ASSERT_FALSE(single.bundled);
    FlipByte(PackFile(dir.path(), single.pack_id), single.offset + kRecordHeaderSize + 10);
    ASSERT_EQ(*store->Get(Sha256(Text(2, 800))), Text(2, 800));  // decodes the bundle
    absl::StatusOr<std::string> got = store->Get(alone);
    std::string read;
    const absl::Status r = store->Read(alone, [&read](std::string_view plain) {
      read = std::string(plain);
      return absl::OkStatus();
    });
    if (serve) {
      ASSERT_TRUE(got.ok()) << got.status();
      EXPECT_EQ(*got, Text(1, 900));
      ASSERT_TRUE(r.ok()) << r;
      EXPECT_EQ(read, Text(1, 900));
    } else {
      EXPECT_EQ(got.status().code(), absl::StatusCode::kDataLoss);
      EXPECT_EQ(r.code(), absl::StatusCode::kDataLoss);
    }
    store->ForgetDecoded();
    EXPECT_EQ(store->Get(alone).status().code(), absl::StatusCode::kDataLoss);
  }
}

TEST(ChunkStoreTest, BundleWithoutDataIsRefusedWithoutVerification) {
  TempDir dir;
  ChunkStoreOptions options;
  options.verify_puts = false;
  auto store = OpenOrDie(dir.path(), options);
  ChunkPut b = MakeBundle({Text(1, 900), Text(2, 800)});
  b.data.clear();
  const absl::Status s = store->PutBatch({MakeChunk("fine"), b});
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << s;
  EXPECT_NE(s.message().find("no data"), absl::string_view::npos) << s;
  EXPECT_EQ(store->Stats()->chunks, 0u);
}

TEST(ChunkStoreTest, LyingBundleIsRefusedWithNothingWritten) {
  TempDir dir;
  auto store = OpenOrDie(dir.path());
  const std::vector<std::string> parts = {Text(1, 900), Text(2, 800)};
  std::vector<std::pair<ChunkPut, std::string>> cases;
  {
    ChunkPut c = MakeBundle(parts);
    c.members[1].fingerprint = Sha256("other");
    cases.push_back({c, "member 1 of its table is not the one put"});
  }
  {
    ChunkPut c = MakeBundle(parts);
    c.plain_size += 1;
    cases.push_back({c, "but its table and members make"});
  }
  {
    // A table that lists a fingerprint its bytes do not hash to.
    std::vector<BundleMember> members = {{Sha256("not these bytes"), 900}, {Sha256(parts[1]), 800}};
    ChunkPut c;
    c.members = members;
    std::string plain = EncodeBundleTable(members) + parts[0] + parts[1];
    c.plain_size = plain.size();
    c.data = Encode(CompressionSpec{Codec::kZstd, 3}, plain, &c.codec);
    cases.push_back({c, "hashes to " + Sha256(parts[0]).ToHex()});
  }
  {
    ChunkPut c = MakeBundle(parts);
    c.data[c.data.size() / 2] ^= 0x55;
    cases.push_back({c, "bundle of 2 chunks from"});
  }
  for (const auto& [c, want] : cases) {
    const absl::Status s = store->PutBatch({MakeChunk("fine"), c});
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << want;
    EXPECT_NE(s.message().find(want), absl::string_view::npos) << s;
  }
  EXPECT_EQ(store->Stats()->chunks, 0u);
  EXPECT_EQ(std::filesystem::file_size(PackFile(dir.path(), 1)), kPackHeaderSize);
}

TEST(ChunkStoreTest, FlippedByteInABundleIsDataLossForEveryMember) {
  TempDir dir;
  const std::vector<std::string> parts = {Text(1, 3000), Text(2, 2000), Text(3, 1000)};
  uint64_t offset = 0;
  {
    auto store = OpenOrDie(dir.path());
    ASSERT_TRUE(store->PutBatch({MakeBundle(parts), MakeChunk("after")}).ok());
    offset = store->Locate(Sha256(parts[0]))->offset;
  }
  FlipByte(PackFile(dir.path(), 2), offset + kRecordHeaderSize + 30);
  auto store = OpenOrDie(dir.path());
  for (const std::string& p : parts) {
    const absl::Status s = store->Get(Sha256(p)).status();
    EXPECT_EQ(s.code(), absl::StatusCode::kDataLoss);
    EXPECT_NE(s.message().find("pack 00000002 offset " + std::to_string(offset)),
              absl::string_view::npos)
        << s;
    bool lent = false;
    EXPECT_EQ(store->Read(Sha256(p),
                          [&lent](std::string_view) {
                            lent = true;
                            return absl::OkStatus();
                          }),
              s);
    EXPECT_FALSE(lent);
  }
  ExpectReadsBack(*store, {"after"});
}

// Read returns what its caller's function returns, and calls it only for a chunk it read.
TEST(ChunkStoreTest, ReadPassesBackItsCallersErrorAndCallsItOnlyForAChunkItRead) {
  TempDir dir;
  auto store = OpenOrDie(dir.path());
  const std::string plain = Text(9, 4000);
  ASSERT_TRUE(store->PutBatch({MakeBundle({plain, Text(10, 100)})}).ok());
  const absl::Status mine = absl::ResourceExhaustedError("disk full");
  EXPECT_EQ(store->Read(Sha256(plain), [&](std::string_view) { return mine; }), mine);
  int calls = 0;
  auto count = [&calls](std::string_view) {
    ++calls;
    return absl::OkStatus();
  };
  EXPECT_EQ(store->Read(Sha256("absent"), count).code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(calls, 0);
}

// GetStored: a chunk as its record holds it (encoded), a bundle member plain, a damaged record
// refused as by Get.
TEST(ChunkStoreTest, GetStoredAnswersTheRecordsBytesOrABundleMemberPlain) {
  TempDir dir;
  auto store = OpenOrDie(dir.path());
  const std::string alone = Text(9, 20000);
  const ChunkPut put = MakeChunk(alone);
  ASSERT_EQ(put.codec, Codec::kZstd);
  const std::vector<std::string> parts = {Text(1, 3000), Text(2, 2000)};
  ASSERT_TRUE(store->PutBatch({put, MakeBundle(parts)}).ok());
  absl::StatusOr<ChunkStore::Stored> got = store->GetStored(put.fingerprint);
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_EQ(got->codec, Codec::kZstd);
  EXPECT_EQ(got->plain_size, alone.size());
  EXPECT_EQ(got->data, put.data);
  got = store->GetStored(Sha256(parts[1]));
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_EQ(got->codec, Codec::kNone);
  EXPECT_EQ(got->data, parts[1]);
  const ChunkLocation loc = *store->Locate(put.fingerprint);
  FlipByte(PackFile(dir.path(), loc.pack_id), loc.offset + kRecordHeaderSize + 10);
  EXPECT_EQ(store->GetStored(put.fingerprint).status().code(), absl::StatusCode::kDataLoss);
  EXPECT_EQ(store->GetStored(Sha256("absent")).status().code(), absl::StatusCode::kNotFound);
}

TEST(ChunkStoreTest, GetBundleRecordAnswersTheWholeBundleAsStoredAndChecksItsCrc) {
  TempDir dir;
  auto store = OpenOrDie(dir.path());
  const std::vector<std::string> parts = {Text(1, 3000), Text(2, 2000)};
  const ChunkPut bundle = MakeBundle(parts);
  const ChunkPut alone = MakeChunk(Text(9, 20000));
  ASSERT_TRUE(store->PutBatch({bundle, alone}).ok());
  const ChunkLocation loc = *store->Locate(Sha256(parts[1]));
  ASSERT_TRUE(loc.bundled);
  absl::StatusOr<ChunkStore::Stored> got = store->GetBundleRecord(Sha256(parts[1]), loc);
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_EQ(got->codec, bundle.codec);
  EXPECT_EQ(got->plain_size, bundle.plain_size);
  EXPECT_EQ(got->data, bundle.data);
  const ChunkLocation not_bundled = *store->Locate(alone.fingerprint);
  EXPECT_EQ(store->GetBundleRecord(alone.fingerprint, not_bundled).status().code(),
            absl::StatusCode::kInvalidArgument);
  FlipByte(PackFile(dir.path(), loc.pack_id), loc.offset + kRecordHeaderSize + 10);
  EXPECT_EQ(store->GetBundleRecord(Sha256(parts[1]), loc).status().code(),
            absl::StatusCode::kDataLoss);
}

// A decoded bundle serves its members for decoded_bundle_ttl only: after that a member is read
// from the pack again, so damage done to the pack while the store runs is found.
TEST(ChunkStoreTest, DecodedBundleIsReadAgainOnceItsTimeIsUp) {
  TempDir dir;
  const std::vector<std::string> parts = {Text(1, 3000), Text(2, 2000), Text(3, 1000)};
  ChunkStoreOptions options;
  options.decoded_bundle_ttl = std::chrono::milliseconds(200);
  auto store = OpenOrDie(dir.path(), options);
  ASSERT_TRUE(store->PutBatch({MakeBundle(parts)}).ok());
  const ChunkLocation loc = *store->Locate(Sha256(parts[0]));
  ExpectReadsBack(*store, {parts[0]});
  FlipByte(PackFile(dir.path(), loc.pack_id), loc.offset + kRecordHeaderSize + 30);
  // Within its time the decoded copy answers (what a restore reading the bundle's members one
  // after the other gets).
  ExpectReadsBack(*store, {parts[1]});
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  for (const std::string& p : parts) {
    EXPECT_EQ(store->Get(Sha256(p)).status().code(), absl::StatusCode::kDataLoss);
  }
}

// Appends bundle `b` to pack `pack_id` as a put that died before its locator write would have
// (synced, not indexed); expects the pack to be of version `version`. Returns the pack's size.
uint64_t AppendUnindexedBundle(const std::string& dir, uint32_t pack_id, const ChunkPut& b,
                               uint32_t version) {
  auto writer = PackWriter::OpenForAppend(dir + "/" + kPacksDirName, pack_id);
  EXPECT_TRUE(writer.ok()) << writer.status();
  if (!writer.ok()) return 0;
  EXPECT_EQ((*writer)->version(), version);
  RecordHeader h{b.codec, static_cast<uint32_t>(b.plain_size), static_cast<uint32_t>(b.data.size()),
                 BundleId(b.members), true};
  EXPECT_TRUE((*writer)->Append(h, b.data).ok());
  EXPECT_TRUE((*writer)->Sync().ok());
  return (*writer)->size();
}

TEST(ChunkStoreTest, BundleWrittenButNotIndexedIsFoundOnOpenAndATornOneCut) {
  TempDir dir;
  {
    auto store = OpenOrDie(dir.path());
    ASSERT_TRUE(store->PutBatch({MakeBundle({"a", "b"})}).ok());
  }
  const std::vector<std::string> parts = {Text(5, 2000), Text(6, 100)};
  const ChunkPut b = MakeBundle(parts);
  const ChunkPut torn = MakeBundle({Text(7, 2000), Text(8, 100)});
  const std::string pack = PackFile(dir.path(), 2);
  const uint64_t end = AppendUnindexedBundle(dir.path(), 2, b, 2);
  AppendUnindexedBundle(dir.path(), 2, torn, 2);
  std::filesystem::resize_file(pack, std::filesystem::file_size(pack) - 5);
  auto store = OpenOrDie(dir.path());
  EXPECT_EQ(std::filesystem::file_size(pack), end);
  ExpectReadsBack(*store, {"a", "b", parts[0], parts[1]});
  EXPECT_TRUE(store->Locate(Sha256(parts[1]))->bundled);
  EXPECT_EQ(store->Get(Sha256(Text(7, 2000))).status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(store->Stats()->chunks, 4u);
}

TEST(ChunkStoreTest, BundleInAVersion1PackIsCutAsATornTail) {
  TempDir dir;
  {
    auto store = OpenOrDie(dir.path());
    ASSERT_TRUE(store->PutBatch({MakeChunk("x")}).ok());
  }
  const ChunkPut b = MakeBundle({Text(5, 2000), Text(6, 100)});
  const std::string pack = PackFile(dir.path(), 1);
  const uint64_t end = std::filesystem::file_size(pack);
  AppendUnindexedBundle(dir.path(), 1, b, 1);
  auto store = OpenOrDie(dir.path());
  EXPECT_EQ(std::filesystem::file_size(pack), end);
  EXPECT_EQ(store->Stats()->chunks, 1u);
}

// Threads reading members of the same bundles at once (as restore's read-ahead threads do)
// share the decoded bundles and all get exact bytes; ForgetDecoded while they read is harmless.
TEST(ChunkStoreTest, ConcurrentGetsOfBundleMembersAgree) {
  TempDir dir;
  auto store = OpenOrDie(dir.path());
  std::vector<std::string> plains;
  std::vector<ChunkPut> puts;
  for (int b = 0; b < 40; ++b) {
    std::vector<std::string> parts;
    for (int m = 0; m < 8; ++m) parts.push_back(Text(b * 8 + m, 1000 + 97 * m));
    plains.insert(plains.end(), parts.begin(), parts.end());
    puts.push_back(MakeBundle(parts));
  }
  ASSERT_TRUE(store->PutBatch(puts).ok());
  std::atomic<int> bad{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      for (int round = 0; round < 3; ++round) {
        for (size_t k = 0; k < plains.size(); ++k) {
          // Threads walk the members in different orders and strides.
          const std::string& p =
              plains[(k * (2 * t + 1) + static_cast<size_t>(round)) % plains.size()];
          absl::StatusOr<std::string> got = store->Get(Sha256(p));
          if (!got.ok() || *got != p) ++bad;
          if (t == 0 && k % 50 == 0) store->ForgetDecoded();
        }
      }
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(bad.load(), 0);
}

TEST(ChunkStoreTest, BundledLocatorEntryOnAPlainRecordIsDataLoss) {
  TempDir dir;
  auto store = OpenOrDie(dir.path());
  ASSERT_TRUE(store->PutBatch({MakeChunk(Text(1, 500))}).ok());
  ChunkLocation loc = *store->Locate(Sha256(Text(1, 500)));
  loc.bundled = true;
  loc.share = 10;
  store.reset();
  {
    LocatorDb db(dir.path());
    ASSERT_TRUE(
        db.db->Put(rocksdb::WriteOptions(), Sha256(Text(1, 500)).ToBytes(), EncodeLocatorValue(loc))
            .ok());
  }
  store = OpenOrDie(dir.path());
  const absl::Status s = store->Get(Sha256(Text(1, 500))).status();
  EXPECT_EQ(s.code(), absl::StatusCode::kDataLoss);
  EXPECT_NE(s.message().find("record is not a bundle, locator expects one"),
            absl::string_view::npos)
      << s;
}

}  // namespace
}  // namespace whorl::chunkstore
