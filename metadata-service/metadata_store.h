// MetadataStore: one metadata shard's state on its own RocksDB: the fingerprint index (which
// chunks are durable in a chunk store) and the snapshot catalog. Start here; key and value
// layouts are in metadata_format.md.
//
// Invariant kept here: a snapshot is committed only if its root tree is in the index (the
// agent uploads every chunk and tree before committing; see design.md, invariant 2).
//
// Thread-safety: safe for concurrent use. One process at a time opens a directory.
#ifndef WHORL_METADATA_SERVICE_METADATA_STORE_H_
#define WHORL_METADATA_SERVICE_METADATA_STORE_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "common/fingerprint.h"
#include "common/rocksdb_log.h"
#include "whorl/v1/objects.pb.h"

namespace whorl::metadata {

// What the index knows of a stored chunk.
struct IndexEntry {
  uint32_t stored_size = 0;  // encoded bytes in the chunk store
  uint32_t plain_size = 0;
  int64_t first_seen_ns = 0;  // when it was first registered
  std::string node;           // chunk-store node holding it ("" in an embedded repository)
};

struct IndexStats {
  uint64_t unique_chunks = 0;
  uint64_t stored_bytes = 0;
  uint64_t plain_bytes = 0;
};

// A catalog record: a snapshot's id (32 bytes, SHA-256 of its serialization) and manifest.
struct SnapshotRecord {
  Fingerprint id;
  v1::Snapshot snapshot;
};

struct MetadataStoreOptions {
  // RocksDB's block cache (filled only as blocks are read). An embedded repository sets its
  // own (agent/embedded_repository.cc); whorl-metad uses kDaemonBlockCacheBytes. whorl-metad
  // kept 1 GiB while RocksDB answered its FindMissing (the blocks of ~15M fingerprints, so a
  // big shard answered from memory); it answers from its own set of fingerprints now, and its
  // cache serves Register's look-ups of new fingerprints (which the filters mostly turn away)
  // and the catalog.
  uint64_t block_cache_bytes = 256 << 20;
  // RocksDB's memtable: bytes written before a flush to a table file. The agent's peak memory
  // grows with it until the first flush (a first backup writes ~100 bytes per chunk), so an
  // embedded repository keeps it small; whorl-metad uses kDaemonWriteBufferBytes. 1 MiB (4
  // before), with the locator's: the source tree's first backup (46k chunks) filled most of
  // 4 MiB, and a tree twice its size flushed it and kept a full one beside the new. Cold, side
  // by side, that tree's peak RSS 67.5-68.2 MiB with 4 MiB, 63.9-64.6 with 2; the source tree's
  // 59.1-62.4 with 2, 57.3-59.0 with 1 (its first backup 2.42-2.52 s and 2.51-2.64 s: a few
  // more flushes).
  uint64_t write_buffer_bytes = 1 << 20;
  // Free space a write must leave on the shard's filesystem, for RocksDB's WAL and memtable
  // flushes; a write that would leave less is refused with RESOURCE_EXHAUSTED ("No space left
  // on device") before anything is written. 0: twice write_buffer_bytes and 1 MiB.
  uint64_t reserve_bytes = 0;
  // Tuned for a daemon answering many lookups at once (whorl-metad): a lock-free block cache
  // (HyperClockCache, whose table is allocated whole up front: 4 MiB for 256 MiB of cache), and
  // index and filter blocks held by the table readers instead of the cache. An embedded
  // repository keeps an LRU cache with everything in it: 6-7 MiB less peak memory for a backup.
  bool daemon = false;
  // Open without writing anything (RocksDB's read-only mode: no new WAL, MANIFEST or OPTIONS
  // file); every write is refused with FAILED_PRECONDITION. The store must exist.
  bool read_only = false;
  // Whether Register syncs the WAL before it returns. whorl-metad does: it answers a chunk
  // store, which then acknowledges the chunks to an agent. An embedded repository does not: its
  // chunk store (whose packs are synced first) is the record of what is stored, a process killed
  // after Register loses nothing (the WAL is written, only not synced), and the next synced write
  // (the snapshot's commit) makes every registration before it durable. A power loss before that
  // commit can forget registrations of chunks that are stored; the next backup finds them
  // missing, uploads them again (the store keeps one copy) and registers them. Measured on the
  // 1 GiB image's first backup, five cold runs each: 2.15-2.33 -> 2.03-2.16 s (one sync of the
  // three per 2 MiB stored).
  bool sync_registrations = true;
  // Where RocksDB's info log goes (common/rocksdb_log.h); lines below `log_level` are dropped.
  // Empty: dropped (a failure reaches the caller as a Status anyway). The store never writes
  // RocksDB's LOG file.
  RocksLogSink log;
  rocksdb::InfoLogLevel log_level = rocksdb::InfoLogLevel::WARN_LEVEL;
};
inline constexpr uint64_t kDaemonWriteBufferBytes = 64 << 20;
inline constexpr uint64_t kDaemonBlockCacheBytes = 256 << 20;

class MetadataStore {
 public:
  // Opens or creates the shard's database in `dir`. DATA_LOSS / INTERNAL with RocksDB's message
  // if the database is damaged or held by another process.
  static absl::StatusOr<std::unique_ptr<MetadataStore>> Open(
      const std::string& dir, const MetadataStoreOptions& options = {});
  virtual ~MetadataStore() = default;

  // For each fingerprint, true if the index does NOT hold it (same order as `fps`).
  virtual absl::StatusOr<std::vector<bool>> FindMissing(const std::vector<Fingerprint>& fps) = 0;

  // Records chunks as durable. Entries already present keep their first_seen. One synced write.
  virtual absl::Status Register(const std::vector<std::pair<Fingerprint, IndexEntry>>& entries) = 0;

  // Removes index entries (absent ones are skipped), so that FindMissing reports these chunks
  // missing and the next backup that meets them stores them again: `whorl repair` does this
  // for chunks that cannot be read. A non-empty call adds 1 to the repair generation in the same
  // synced write.
  virtual absl::Status Unregister(const std::vector<Fingerprint>& fps) = 0;

  // How many Unregister calls with fingerprints this shard has taken (0 if none).
  virtual absl::StatusOr<uint64_t> RepairGeneration() = 0;

  // Looks one fingerprint up: NOT_FOUND if absent.
  virtual absl::StatusOr<IndexEntry> Lookup(const Fingerprint& fp) = 0;

  // Stores `snapshot` under its id (returned). FAILED_PRECONDITION if its root tree is not in
  // the index; INVALID_ARGUMENT if the root is not a fingerprint. Idempotent. Synced.
  virtual absl::StatusOr<Fingerprint> CommitSnapshot(const v1::Snapshot& snapshot) = 0;

  // Stores `snapshot` without the local root check: for a shard whose catalog holds snapshots
  // whose root tree another shard indexes (the caller checked it there). Idempotent. Synced.
  virtual absl::StatusOr<Fingerprint> CommitSnapshotUnchecked(const v1::Snapshot& snapshot) = 0;

  // The repository config (JSON) stored on this shard: NOT_FOUND if none. PutConfig stores it
  // if absent (synced); ALREADY_EXISTS if a different one is there; OK if the same.
  virtual absl::StatusOr<std::string> GetConfig() = 0;
  virtual absl::Status PutConfig(const std::string& config) = 0;
  // Replaces the config with `config` (synced) if it is still `expected`; FAILED_PRECONDITION
  // "repository config changed meanwhile" if not, NOT_FOUND if there is none.
  virtual absl::Status ReplaceConfig(const std::string& expected, const std::string& config) = 0;

  // Calls `fn` for every fingerprint in the index (for building the shard's Bloom filter).
  virtual absl::Status ForEachFingerprint(const std::function<void(const Fingerprint&)>& fn) = 0;

  // A RocksDB integer property ("rocksdb.estimate-num-keys", "rocksdb.total-sst-files-size"),
  // for metrics; 0 if RocksDB does not know it.
  virtual uint64_t Property(const std::string& name) = 0;

  // All snapshots, oldest first (by time, then id).
  virtual absl::StatusOr<std::vector<SnapshotRecord>> ListSnapshots() = 0;

  virtual absl::StatusOr<IndexStats> Stats() = 0;
};

// The id of a snapshot: SHA-256 of its deterministic serialization.
Fingerprint SnapshotId(const v1::Snapshot& snapshot);
// Deterministic serialization (stable across runs of one build; map-free messages).
std::string SerializeDeterministic(const google::protobuf::MessageLite& message);

}  // namespace whorl::metadata

#endif  // WHORL_METADATA_SERVICE_METADATA_STORE_H_
