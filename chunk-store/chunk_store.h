// ChunkStore: content-addressed chunk storage in append-only pack files, with a RocksDB
// locator index (fingerprint -> pack, offset, sizes). Start here; the byte layout is in
// pack_format.md.
//
// Durability contract: when PutBatch returns OK, every chunk in the batch is durable: its pack
// bytes were fdatasync'd, then its locator entry written with sync. One sync covers the whole
// batch (group commit). After a crash, Open() cuts a torn record off the tail of the newest pack
// and re-indexes whole records that were written but not yet in the locator.
//
// Thread-safety: a ChunkStore is safe for concurrent use by multiple threads. One process at a
// time may open a directory (RocksDB's LOCK file enforces it).
//
// Example:
//   WHORL_ASSIGN_OR_RETURN(std::unique_ptr<ChunkStore> store, ChunkStore::Open(dir, {}));
//   WHORL_RETURN_IF_ERROR(store->PutBatch(chunks));
//   WHORL_ASSIGN_OR_RETURN(std::string plain, store->Get(fp));
#ifndef WHORL_CHUNK_STORE_CHUNK_STORE_H_
#define WHORL_CHUNK_STORE_CHUNK_STORE_H_

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/functional/function_ref.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "common/bundle.h"
#include "common/codec.h"
#include "common/fingerprint.h"
#include "common/rocksdb_log.h"

namespace whorl::chunkstore {

struct ChunkStoreOptions {
  // A pack is closed and a new one started once it reaches this size. Default: 64 MiB.
  uint64_t max_pack_bytes = 64ull << 20;
  // Verify SHA-256(decode(data)) == fingerprint on every put, refusing a mismatch with
  // INVALID_ARGUMENT. Default: true. An in-process caller that computed the fingerprint from
  // these very bytes may turn it off; a store that serves the network must not.
  bool verify_puts = true;
  // Largest plain or stored chunk accepted, in bytes. Default: 64 MiB. Open with at least the
  // value the store was written with: recovery takes a larger record in the newest pack for
  // damage (and then refuses to open if the locator indexes it or anything after it).
  uint64_t max_chunk_bytes = 64ull << 20;
  // RocksDB memtable of the locator, in bytes, before a flush to a table file. Default: 1 MiB
  // (~17k chunks; see metadata::MetadataStoreOptions::write_buffer_bytes for why not more).
  uint64_t locator_write_buffer_bytes = 1ull << 20;
  // The locator's RocksDB block cache, in bytes (decoded 16 KiB blocks, ~350 chunks each).
  uint64_t locator_block_cache_bytes = 8ull << 20;
  // Free space a put must leave on the store's filesystem, for the locator's WAL and memtable
  // flushes: a put that would leave less is refused with RESOURCE_EXHAUSTED ("No space left on
  // device") before anything is written. 0: twice locator_write_buffer_bytes and 1 MiB.
  uint64_t reserve_bytes = 0;
  // Open without writing anything: RocksDB's read-only mode (no new WAL, MANIFEST or OPTIONS
  // file), no recovery of the newest pack's tail (records a crash left past the indexed end stay
  // unread), and every put refused with FAILED_PRECONDITION. Readers of a full disk and readers
  // side by side with each other use it. The store must exist.
  bool read_only = false;
  // How long a decoded bundle may serve its members' Gets before it is read from the pack again.
  // Members of one bundle are read together (a restore, a check in pack order), so a short time
  // keeps the decode-once gain; a longer one would let a daemon serve a member from memory after
  // its pack was damaged on disk, and a `check --read-data` miss that damage.
  std::chrono::milliseconds decoded_bundle_ttl{10'000};
  // Get and Read of a chunk that a cached decoded bundle holds (within decoded_bundle_ttl) serve
  // it from there without looking up its locator entry: the bytes are the same wherever the
  // chunk is stored, since its fingerprint names them (callers that check the hash still do).
  // An agent walking its parent snapshot reads ~9k trees from a few bundles: each lookup was a
  // RocksDB Get of a random key, on a cold disk a read of its own. Default: false, every read
  // goes through its locator entry, as `check --read-data`, repairs and a daemon that forgets
  // unreadable chunks need (a copy elsewhere must not hide a damaged one).
  bool serve_cached_members = false;
  // Whether a put syncs its locator write before it returns. Its records are synced first
  // either way. Without the sync, a put leaves its packs' indexed ends (pack_ends) where the
  // last Sync put them; a process killed after the put loses nothing (RocksDB wrote the WAL
  // record; only the sync is missing), and a power loss can lose only locator entries whose
  // records lie, synced, past their pack's durable end: the next open indexes them again from
  // the packs (pack_format.md, "Recovery at open"). Sync() makes every put before it durable
  // and moves the ends, as synced puts would; the caller calls it before anything outside the
  // store names the chunks durably, and best before it closes the store (else the next open
  // scans those records again). An embedded repository, which syncs before it commits a
  // snapshot, sets this false: one fdatasync of the two per 2 MiB stored. A daemon that
  // acknowledges puts to agents (which then register the chunks with a metadata shard on
  // another machine) keeps it true.
  bool sync_locator = true;
  // Where RocksDB's info log goes (common/rocksdb_log.h); lines below `log_level` are dropped.
  // Empty: dropped (a failure reaches the caller as a Status anyway). The store never writes
  // RocksDB's LOG file.
  RocksLogSink log;
  rocksdb::InfoLogLevel log_level = rocksdb::InfoLogLevel::WARN_LEVEL;
};

// One chunk to store: its fingerprint, its encoded bytes and how they were encoded. Or, with
// `members` set, a bundle of chunks stored as one record (common/bundle.h): `data` encodes the
// bundle's plain bytes (member table, then the members' bytes; `plain_size` of them), and
// `fingerprint` is ignored (the record carries BundleId(members)).
struct ChunkPut {
  Fingerprint fingerprint;
  Codec codec = Codec::kNone;
  uint64_t plain_size = 0;
  std::string data;  // encoded with `codec`
  std::vector<BundleMember> members;
};

// Where a chunk's record lies.
struct ChunkLocation {
  uint32_t pack_id = 0;
  uint64_t offset = 0;       // of the record's header in the pack
  uint32_t stored_size = 0;  // encoded data bytes (the record is header + data)
  uint32_t plain_size = 0;   // of the chunk (not of its bundle)
  Codec codec = Codec::kNone;
  // A chunk in a bundle: where its bytes start in the bundle's plain bytes, and its share of
  // the record's bytes (header included; the shares of a bundle's members sum to its size).
  bool bundled = false;
  uint32_t inner_offset = 0;
  uint32_t share = 0;
};

// A pack file that cannot serve (all of) the chunks the locator places in it (CheckPacks).
struct PackProblem {
  uint32_t pack_id = 0;
  // What is wrong, naming the file: "DIR/packs/00000003.pack: pack file missing", "...: empty
  // pack file (0 bytes)", "...: bad pack magic (not a whorl pack file)", "...: 4096 bytes, but
  // its indexed records end at 9000".
  std::string problem;
  // The chunks the locator places (wholly or partly) in bytes that are gone or unreadable, in
  // fingerprint order. Empty for a damaged pack the locator indexes nothing in.
  std::vector<Fingerprint> lost;
};

struct ChunkStoreStats {
  uint64_t chunks = 0;        // unique chunks in the locator
  uint64_t stored_bytes = 0;  // bytes their records take in packs (headers included; a chunk
                              // in a bundle counts its share)
  uint64_t plain_bytes = 0;   // their plain sizes summed
  uint64_t packs = 0;
};

class ChunkStore {
 public:
  // Opens the store in `dir`, creating it if absent, and recovers the newest pack's tail.
  // A damaged pack does not stop the store from opening (the rest stays readable): a pack file
  // that is missing, empty or has a bad header is never read or appended to, Get of a chunk in
  // it is DATA_LOSS naming the file, and CheckPacks reports it.
  // Errors: DATA_LOSS if the locator is damaged; I/O errors.
  static absl::StatusOr<std::unique_ptr<ChunkStore>> Open(const std::string& dir,
                                                          const ChunkStoreOptions& options);
  virtual ~ChunkStore() = default;

  // Stores every chunk not yet stored; a chunk already stored (or twice in the batch) is kept
  // once. A bundle is written whole if any of its members is new, and indexes only those. Validates
  // every item first: if any is malformed (size over the cap, fingerprint mismatch, unknown codec)
  // nothing is written and INVALID_ARGUMENT names the item's fingerprint. On OK all chunks are
  // durable. `newly_stored`, if not null, receives the count of chunks this call added.
  // With sync_locator false, the chunks' records are durable and their locator entries become
  // so at the next Sync (or are indexed again from the records at the next open).
  virtual absl::Status PutBatch(const std::vector<ChunkPut>& chunks,
                                uint64_t* newly_stored = nullptr) = 0;
  // Makes every put so far durable with its locator entries and moves the packs' indexed ends
  // past them (one synced write; nothing to do with sync_locator true or no put since the last
  // Sync). FAILED_PRECONDITION if opened read-only.
  virtual absl::Status Sync() = 0;

  // Returns the plain bytes of a chunk. NOT_FOUND if absent; DATA_LOSS (naming the pack and
  // offset) if its record fails its CRC, header checks or decoding. It does not recompute the
  // SHA-256: callers that need that check (restore, check --read-data) do it. A chunk in a bundle
  // is sliced from the last few bundles decoded, if its bundle is among them, without reading the
  // pack again (ForgetDecoded drops them).
  virtual absl::StatusOr<std::string> Get(const Fingerprint& fp) = 0;
  // Get's bytes lent to `use` for the length of the call instead of copied out: a slice of the
  // decoded bundle, the record's own bytes when stored plain, or a buffer decoded into. Returns
  // Get's errors (`use` is then not called) or what `use` returns.
  virtual absl::Status Read(const Fingerprint& fp,
                            absl::FunctionRef<absl::Status(std::string_view)> use) = 0;

  // A chunk as its record holds it, for a caller that decodes and hash-checks it itself (an agent
  // reading from whorl-chunkd): the record's CRC and header are checked as by Get, its bytes are
  // not decoded. A chunk in a bundle comes back plain (codec kNone), sliced as Get slices it.
  struct Stored {
    Codec codec = Codec::kNone;
    uint64_t plain_size = 0;
    std::string data;  // encoded with `codec`
  };
  virtual absl::StatusOr<Stored> GetStored(const Fingerprint& fp) = 0;
  // GetStored for a caller that already has the chunk's locator entry (Locate): no second
  // lookup.
  virtual absl::StatusOr<Stored> GetStoredAt(const Fingerprint& fp, const ChunkLocation& loc) = 0;
  // The whole record of the bundle that holds chunk `fp`, which the locator placed at `loc`
  // (loc.bundled), as stored: its codec, the bundle's plain size and its encoded bytes, the
  // record's CRC and header checked, nothing decoded. The caller decodes it, finds the member in
  // its table and hash-checks it.
  virtual absl::StatusOr<Stored> GetBundleRecord(const Fingerprint& fp,
                                                 const ChunkLocation& loc) = 0;

  // Drops the decoded bundles Get keeps: every later Get reads the packs (`check --read-data`
  // calls it first, so that a byte damaged on disk since an earlier read is found).
  virtual void ForgetDecoded() = 0;

  // Removes locator entries (absent ones are skipped): Get of these chunks is NOT_FOUND, and a
  // later put of one writes it anew. For `whorl repair`, which forgets chunks that cannot be
  // read so that the next backup stores them again; their records stay in the packs, unread.
  // One synced write. FAILED_PRECONDITION if opened read-only.
  virtual absl::Status Forget(const std::vector<Fingerprint>& fps) = 0;

  // Locator lookup only: NOT_FOUND if absent.
  virtual absl::StatusOr<ChunkLocation> Locate(const Fingerprint& fp) = 0;

  // For each fingerprint, whether the locator holds it (same order as `fps`).
  virtual absl::StatusOr<std::vector<bool>> Contains(const std::vector<Fingerprint>& fps) = 0;

  // Calls `fn` for every locator entry, in fingerprint order; stops at the first non-OK status
  // `fn` returns and returns it.
  virtual absl::Status ForEach(
      const std::function<absl::Status(const Fingerprint&, const ChunkLocation&)>& fn) = 0;

  virtual absl::StatusOr<ChunkStoreStats> Stats() = 0;

  // Every pack that is missing, empty, has a bad header or is shorter than the end of the
  // records the locator indexes in it, in pack id order, with the chunks lost with it; empty if
  // all are sound. Reads no chunk data (a damaged record inside a sound pack is found by Get,
  // i.e. `check --read-data`): a stat and a 16-byte read per pack, plus one locator scan only
  // if some pack has a problem. Safe to call while puts run.
  virtual absl::StatusOr<std::vector<PackProblem>> CheckPacks() = 0;

  // Every stored fingerprint in pack order (pack, offset, place in its bundle): reading them in
  // this order reads each pack front to back and a bundle's members one after the other, so
  // the store decodes each bundle once (it keeps a few decoded). Holds ~48 bytes per chunk
  // while it sorts.
  absl::StatusOr<std::vector<Fingerprint>> ListInPackOrder();
};

}  // namespace whorl::chunkstore

#endif  // WHORL_CHUNK_STORE_CHUNK_STORE_H_
