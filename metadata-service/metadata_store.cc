#include "metadata-service/metadata_store.h"

#include <google/protobuf/io/coded_stream.h>
#include <google/protobuf/io/zero_copy_stream_impl_lite.h>
#include <rocksdb/cache.h>
#include <rocksdb/db.h>
#include <rocksdb/filter_policy.h>
#include <rocksdb/table.h>
#include <rocksdb/write_batch.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <thread>

#include "absl/synchronization/mutex.h"
#include "common/file_util.h"
#include "common/kill_point.h"
#include "common/rocksdb_wal.h"
#include "common/status_macros.h"

namespace whorl::metadata {
namespace {

constexpr char kChunkPrefix = 'c';
constexpr char kSnapshotPrefix = 's';
constexpr char kConfigKey[] = "k:config";
constexpr char kRepairKey[] = "k:repair";
constexpr size_t kEntryFixedSize = 16;  // stored u32, plain u32, first_seen i64

absl::Status FromRocks(const rocksdb::Status& s, std::string_view context) {
  if (s.ok()) return absl::OkStatus();
  std::string msg = std::string(context) + ": " + s.ToString();
  if (s.IsCorruption()) return absl::DataLossError(msg);
  if (s.IsNotFound()) return absl::NotFoundError(msg);
  if (s.IsIOError() && s.subcode() == rocksdb::Status::kNoSpace) {
    return absl::ResourceExhaustedError(msg);
  }
  if (s.IsIOError() && msg.find("lock") != std::string::npos) {
    return absl::UnavailableError(msg + " (is another process using it?)");
  }
  return absl::InternalError(msg);
}

std::string ChunkKey(const Fingerprint& fp) {
  std::string key(1, kChunkPrefix);
  key.append(reinterpret_cast<const char*>(fp.bytes.data()), Fingerprint::kSize);
  return key;
}

void PutFixed32(std::string* out, uint32_t v) {
  for (int i = 0; i < 4; ++i) out->push_back(static_cast<char>(v >> (8 * i)));
}
void PutFixed64(std::string* out, uint64_t v) {
  for (int i = 0; i < 8; ++i) out->push_back(static_cast<char>(v >> (8 * i)));
}
uint64_t GetFixed(const char* p, int n) {
  uint64_t v = 0;
  for (int i = n - 1; i >= 0; --i) v = (v << 8) | static_cast<uint8_t>(p[i]);
  return v;
}

std::string EncodeEntry(const IndexEntry& e) {
  std::string out;
  PutFixed32(&out, e.stored_size);
  PutFixed32(&out, e.plain_size);
  PutFixed64(&out, static_cast<uint64_t>(e.first_seen_ns));
  out += e.node;
  return out;
}

absl::StatusOr<IndexEntry> DecodeEntry(std::string_view v) {
  if (v.size() < kEntryFixedSize) return absl::DataLossError("index entry too short");
  IndexEntry e;
  e.stored_size = static_cast<uint32_t>(GetFixed(v.data(), 4));
  e.plain_size = static_cast<uint32_t>(GetFixed(v.data() + 4, 4));
  e.first_seen_ns = static_cast<int64_t>(GetFixed(v.data() + 8, 8));
  e.node = std::string(v.substr(kEntryFixedSize));
  return e;
}

int64_t NowNs() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

// Thread-safe: RocksDB is; mu_ serialises read-modify-write in Register.
class MetadataStoreImpl : public MetadataStore {
 public:
  MetadataStoreImpl(std::unique_ptr<rocksdb::DB> db, std::string dir, uint64_t reserve_bytes,
                    bool read_only, bool sync_registrations)
      : db_(std::move(db)),
        dir_(std::move(dir)),
        reserve_bytes_(reserve_bytes),
        read_only_(read_only),
        sync_registrations_(sync_registrations),
        latch_("metadata store " + dir_) {}

  // Batches at least this big are looked up on two threads.
  static constexpr size_t kParallelLookupMin = 4096;

  absl::StatusOr<std::vector<bool>> FindMissing(const std::vector<Fingerprint>& fps) override {
    std::vector<std::string> keys;
    keys.reserve(fps.size());
    for (const Fingerprint& fp : fps) keys.push_back(ChunkKey(fp));
    // Sorted keys let MultiGet skip its own sort and walk each file's blocks in order.
    std::vector<uint32_t> order(fps.size());
    for (uint32_t i = 0; i < order.size(); ++i) order[i] = i;
    std::sort(order.begin(), order.end(),
              [&](uint32_t a, uint32_t b) { return keys[a] < keys[b]; });
    std::vector<rocksdb::Slice> slices;
    slices.reserve(order.size());
    for (uint32_t i : order) slices.emplace_back(keys[i]);
    std::vector<rocksdb::PinnableSlice> values(keys.size());
    std::vector<rocksdb::Status> statuses(keys.size());
    // A big batch (an agent asks up to 16384 at once) is split in two sorted halves looked up on
    // two threads: a shard answers one agent's batch with both cores.
    const size_t half = slices.size() >= kParallelLookupMin ? slices.size() / 2 : 0;
    auto lookup = [&](size_t begin, size_t end) {
      db_->MultiGet(rocksdb::ReadOptions(), db_->DefaultColumnFamily(), end - begin,
                    slices.data() + begin, values.data() + begin, statuses.data() + begin,
                    /*sorted_input=*/true);
    };
    std::thread second;
    if (half > 0) second = std::thread(lookup, half, slices.size());
    lookup(0, half > 0 ? half : slices.size());
    if (second.joinable()) second.join();
    std::vector<bool> missing(fps.size());
    for (size_t k = 0; k < order.size(); ++k) {
      if (statuses[k].IsNotFound()) {
        missing[order[k]] = true;
      } else {
        WHORL_RETURN_IF_ERROR(FromRocks(statuses[k], "index lookup"));
      }
    }
    return missing;
  }

  absl::Status Register(const std::vector<std::pair<Fingerprint, IndexEntry>>& entries) override {
    absl::MutexLock lock(&mu_);
    std::vector<Fingerprint> fps;
    fps.reserve(entries.size());
    for (const auto& e : entries) fps.push_back(e.first);
    WHORL_ASSIGN_OR_RETURN(std::vector<bool> missing, FindMissing(fps));
    rocksdb::WriteBatch batch;
    const int64_t now = NowNs();
    for (size_t i = 0; i < entries.size(); ++i) {
      if (!missing[i]) continue;
      IndexEntry e = entries[i].second;
      if (e.first_seen_ns == 0) e.first_seen_ns = now;
      batch.Put(ChunkKey(entries[i].first), EncodeEntry(e));
    }
    if (batch.Count() == 0) return absl::OkStatus();
    WHORL_RETURN_IF_ERROR(CanWrite(batch.GetDataSize()));
    rocksdb::WriteOptions wo;
    wo.sync = sync_registrations_;
    WHORL_KILL_POINT("meta.index_put.before");
    WHORL_RETURN_IF_ERROR(latch_.Note(FromRocks(db_->Write(wo, &batch), "index register")));
    WHORL_KILL_POINT("meta.index_put.after");
    return absl::OkStatus();
  }

  absl::Status Unregister(const std::vector<Fingerprint>& fps) override {
    absl::MutexLock lock(&mu_);
    if (fps.empty()) return absl::OkStatus();
    WHORL_ASSIGN_OR_RETURN(const uint64_t generation, RepairGeneration());
    rocksdb::WriteBatch batch;
    for (const Fingerprint& fp : fps) batch.Delete(ChunkKey(fp));
    std::string value;
    PutFixed64(&value, generation + 1);
    batch.Put(kRepairKey, value);
    WHORL_RETURN_IF_ERROR(CanWrite(batch.GetDataSize()));
    rocksdb::WriteOptions wo;
    wo.sync = true;
    return latch_.Note(FromRocks(db_->Write(wo, &batch), "index unregister"));
  }

  absl::StatusOr<uint64_t> RepairGeneration() override {
    std::string value;
    rocksdb::Status s = db_->Get(rocksdb::ReadOptions(), kRepairKey, &value);
    if (s.IsNotFound()) return 0;
    WHORL_RETURN_IF_ERROR(FromRocks(s, "repair generation"));
    if (value.size() != 8) {
      return absl::DataLossError("repair generation of " + std::to_string(value.size()) +
                                 " bytes, want 8 (metadata store " + dir_ + ")");
    }
    return GetFixed(value.data(), 8);
  }

  absl::StatusOr<IndexEntry> Lookup(const Fingerprint& fp) override {
    std::string value;
    rocksdb::Status s = db_->Get(rocksdb::ReadOptions(), ChunkKey(fp), &value);
    if (s.IsNotFound()) return absl::NotFoundError("chunk " + fp.ToHex() + " is not in the index");
    WHORL_RETURN_IF_ERROR(FromRocks(s, "index lookup"));
    return DecodeEntry(value);
  }

  absl::StatusOr<Fingerprint> CommitSnapshot(const v1::Snapshot& snapshot) override {
    WHORL_ASSIGN_OR_RETURN(Fingerprint root, Fingerprint::FromBytes(snapshot.root()));
    absl::Status present = Lookup(root).status();
    if (absl::IsNotFound(present)) {
      return absl::FailedPreconditionError("snapshot root tree " + root.ToHex() +
                                           " is not in the index");
    }
    WHORL_RETURN_IF_ERROR(present);
    return CommitSnapshotUnchecked(snapshot);
  }

  absl::StatusOr<Fingerprint> CommitSnapshotUnchecked(const v1::Snapshot& snapshot) override {
    WHORL_RETURN_IF_ERROR(Fingerprint::FromBytes(snapshot.root()).status());
    const Fingerprint id = SnapshotId(snapshot);
    std::string key(1, kSnapshotPrefix);
    key += id.ToBytes();
    const std::string value = SerializeDeterministic(snapshot);
    WHORL_RETURN_IF_ERROR(CanWrite(key.size() + value.size()));
    rocksdb::WriteOptions wo;
    wo.sync = true;
    WHORL_KILL_POINT("meta.catalog_commit.before");
    WHORL_RETURN_IF_ERROR(latch_.Note(FromRocks(db_->Put(wo, key, value), "catalog commit")));
    WHORL_KILL_POINT("meta.catalog_commit.after");
    return id;
  }

  uint64_t Property(const std::string& name) override {
    uint64_t value = 0;
    if (!db_->GetIntProperty(name, &value)) return 0;
    return value;
  }

  absl::StatusOr<std::string> GetConfig() override {
    std::string value;
    rocksdb::Status s = db_->Get(rocksdb::ReadOptions(), kConfigKey, &value);
    if (s.IsNotFound()) return absl::NotFoundError("no repository: run whorl init");
    WHORL_RETURN_IF_ERROR(FromRocks(s, "config"));
    return value;
  }

  absl::Status PutConfig(const std::string& config) override {
    absl::MutexLock lock(&mu_);
    absl::StatusOr<std::string> have = GetConfig();
    if (have.ok()) {
      if (*have == config) return absl::OkStatus();
      return absl::AlreadyExistsError("repository already exists");
    }
    if (!absl::IsNotFound(have.status())) return have.status();
    WHORL_RETURN_IF_ERROR(CanWrite(config.size()));
    rocksdb::WriteOptions wo;
    wo.sync = true;
    return latch_.Note(FromRocks(db_->Put(wo, kConfigKey, config), "config"));
  }

  absl::Status ReplaceConfig(const std::string& expected, const std::string& config) override {
    absl::MutexLock lock(&mu_);
    WHORL_ASSIGN_OR_RETURN(const std::string have, GetConfig());
    if (have != expected)
      return absl::FailedPreconditionError("repository config changed meanwhile");
    if (have == config) return absl::OkStatus();
    WHORL_RETURN_IF_ERROR(CanWrite(config.size()));
    rocksdb::WriteOptions wo;
    wo.sync = true;
    return latch_.Note(FromRocks(db_->Put(wo, kConfigKey, config), "config"));
  }

  absl::Status ForEachFingerprint(const std::function<void(const Fingerprint&)>& fn) override {
    // A scan of the whole index, once: its blocks stay out of the cache (whorl-metad's start
    // filled 700 MB of cache with a 10M-fingerprint shard's blocks, never read again), and the
    // files are read ahead in big reads.
    rocksdb::ReadOptions scan;
    scan.fill_cache = false;
    scan.readahead_size = 2 << 20;
    std::unique_ptr<rocksdb::Iterator> it(db_->NewIterator(scan));
    const std::string prefix(1, kChunkPrefix);
    for (it->Seek(prefix); it->Valid() && it->key().starts_with(prefix); it->Next()) {
      WHORL_ASSIGN_OR_RETURN(Fingerprint fp,
                             Fingerprint::FromBytes(it->key().ToStringView().substr(1)));
      fn(fp);
    }
    return FromRocks(it->status(), "index scan");
  }

  absl::StatusOr<std::vector<SnapshotRecord>> ListSnapshots() override {
    std::vector<SnapshotRecord> out;
    std::unique_ptr<rocksdb::Iterator> it(db_->NewIterator(rocksdb::ReadOptions()));
    const std::string prefix(1, kSnapshotPrefix);
    for (it->Seek(prefix); it->Valid() && it->key().starts_with(prefix); it->Next()) {
      SnapshotRecord rec;
      WHORL_ASSIGN_OR_RETURN(rec.id, Fingerprint::FromBytes(it->key().ToStringView().substr(1)));
      if (!rec.snapshot.ParseFromArray(it->value().data(), static_cast<int>(it->value().size()))) {
        return absl::DataLossError("catalog: snapshot " + rec.id.ToHex() + " does not parse");
      }
      out.push_back(std::move(rec));
    }
    WHORL_RETURN_IF_ERROR(FromRocks(it->status(), "catalog list"));
    std::sort(out.begin(), out.end(), [](const SnapshotRecord& a, const SnapshotRecord& b) {
      if (a.snapshot.time_ns() != b.snapshot.time_ns()) {
        return a.snapshot.time_ns() < b.snapshot.time_ns();
      }
      return a.id < b.id;
    });
    return out;
  }

  absl::StatusOr<IndexStats> Stats() override {
    IndexStats stats;
    std::unique_ptr<rocksdb::Iterator> it(db_->NewIterator(rocksdb::ReadOptions()));
    const std::string prefix(1, kChunkPrefix);
    for (it->Seek(prefix); it->Valid() && it->key().starts_with(prefix); it->Next()) {
      WHORL_ASSIGN_OR_RETURN(IndexEntry e, DecodeEntry(it->value().ToStringView()));
      ++stats.unique_chunks;
      stats.stored_bytes += e.stored_size;
      stats.plain_bytes += e.plain_size;
    }
    WHORL_RETURN_IF_ERROR(FromRocks(it->status(), "index stats"));
    return stats;
  }

 private:
  // Refuses a write of about `bytes` when an earlier one failed or the disk is nearly full.
  absl::Status CanWrite(uint64_t bytes) {
    if (read_only_) {
      return absl::FailedPreconditionError("metadata store " + dir_ +
                                           ": opened read-only, it takes no writes");
    }
    WHORL_RETURN_IF_ERROR(latch_.Check());
    return CheckFreeSpace(dir_, bytes, reserve_bytes_);
  }

  std::unique_ptr<rocksdb::DB> db_;
  const std::string dir_;
  const uint64_t reserve_bytes_;
  const bool read_only_;
  const bool sync_registrations_;
  WriteLatch latch_;  // the first failed write
  absl::Mutex mu_;
};

}  // namespace

std::string SerializeDeterministic(const google::protobuf::MessageLite& message) {
  std::string out;
  {
    google::protobuf::io::StringOutputStream raw(&out);
    google::protobuf::io::CodedOutputStream coded(&raw);
    coded.SetSerializationDeterministic(true);
    message.SerializeToCodedStream(&coded);
  }
  return out;
}

Fingerprint SnapshotId(const v1::Snapshot& snapshot) {
  return Sha256(SerializeDeterministic(snapshot));
}

absl::StatusOr<std::unique_ptr<MetadataStore>> MetadataStore::Open(
    const std::string& dir, const MetadataStoreOptions& store_options) {
  rocksdb::Options options;
  options.create_if_missing = true;
  options.paranoid_checks = true;
  options.info_log = NewRocksLogger(store_options.log, store_options.log_level);
  options.wal_recovery_mode = kWalRecoveryMode;
  // Tuned for FindMissing (tests/bench/whorl_bench.cc measures it): keys are SHA-256 digests,
  // which no compressor shrinks, so blocks are stored plain and a lookup never decompresses;
  // the memtable has a whole-key Bloom filter, so an absent key skips the skip-list walk; data
  // blocks carry a hash index (RocksDB reads old and new blocks alike), so a present key skips
  // the binary search. A daemon keeps the filters and indexes in the table readers, not the
  // block cache, so a lookup costs one cache access (its data block) instead of three, and uses
  // RocksDB's lock-free HyperClockCache: an LRUCache spent a quarter of a busy shard's CPU in
  // its hash table and list (0.97-1.05M -> 1.24-1.28M fingerprints/s over gRPC with both
  // changes). RocksDB 7.8.0 fixed HyperClockCache's last listed bug; 7.9 calls it
  // production-ready without further fixes. An embedded repository's index is part of the
  // repository a user pays for and answers one backup at a time: its blocks are zstd-compressed
  // (the values, sizes and first-seen times, do shrink): 2.85 -> 2.21 MB for the benchmark's
  // source tree after 9 backups, the first backup's time the same.
  options.compression = store_options.daemon ? rocksdb::kNoCompression : rocksdb::kZSTD;
  options.write_buffer_size = store_options.write_buffer_bytes;
  options.memtable_prefix_bloom_size_ratio = 0.05;
  options.memtable_whole_key_filtering = true;
  rocksdb::BlockBasedTableOptions table;
  // Embedded: 16 bits a key (~0.1% false positives against 1%): a backup asks about new
  // fingerprints, and each false positive reads and decodes a block that the cache keeps. The
  // daemon's own filter (metadata_server.cc) already stands in front of its lookups.
  table.filter_policy.reset(rocksdb::NewBloomFilterPolicy(store_options.daemon ? 10 : 16));
  table.whole_key_filtering = true;
  table.data_block_index_type = rocksdb::BlockBasedTableOptions::kDataBlockBinaryAndHash;
  // Embedded: 16 KiB blocks compress better and need fewer index entries (2.21 -> 2.08 MB).
  if (!store_options.daemon) table.block_size = 16 << 10;
  if (store_options.daemon) {
    // Every key of a data block is a restart point: the block's hash index leads a lookup to
    // its key, not to a run of 16 keys to decode one by one (SHA-256 keys share no prefix to
    // delta-encode; the restart array costs +9% on disk: 643 -> 703 MB for 10M). Every level
    // keeps Bloom filters: whorl-metad answers FindMissing from its own set of the shard's
    // fingerprints (metadata_server.cc), so what reaches RocksDB is Register's look-up of
    // fingerprints that set lacks, new ones, which the filters turn away. (While RocksDB
    // answered FindMissing, for mostly present keys, the bottom level kept none:
    // optimize_filters_for_hits; tables written then have none until compacted.)
    table.block_restart_interval = 1;
    // Entries are data blocks (4 KiB by default), the charge HyperClockCache sizes its table by.
    table.block_cache =
        rocksdb::HyperClockCacheOptions(store_options.block_cache_bytes, table.block_size)
            .MakeSharedCache();
    table.cache_index_and_filter_blocks = false;
  } else {
    table.block_cache = rocksdb::NewLRUCache(store_options.block_cache_bytes);
    table.cache_index_and_filter_blocks = true;
    table.pin_l0_filter_and_index_blocks_in_cache = true;
  }
  options.table_factory.reset(rocksdb::NewBlockBasedTableFactory(table));
  rocksdb::DB* db = nullptr;
  if (store_options.read_only) {
    WHORL_RETURN_IF_ERROR(
        FromRocks(rocksdb::DB::OpenForReadOnly(options, dir, &db), "metadata " + dir));
  } else {
    WHORL_RETURN_IF_ERROR(FromRocks(rocksdb::DB::Open(options, dir, &db), "metadata " + dir));
    RemoveEarlierEmptyWals(db);
  }
  return std::unique_ptr<MetadataStore>(std::make_unique<MetadataStoreImpl>(
      std::unique_ptr<rocksdb::DB>(db), dir,
      store_options.reserve_bytes != 0 ? store_options.reserve_bytes
                                       : 2 * store_options.write_buffer_bytes + (1 << 20),
      store_options.read_only, store_options.sync_registrations));
}

}  // namespace whorl::metadata
