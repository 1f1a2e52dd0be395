#include "chunk-store/chunk_store.h"

#include <rocksdb/cache.h>
#include <rocksdb/db.h>
#include <rocksdb/filter_policy.h>
#include <rocksdb/table.h>
#include <rocksdb/write_batch.h>
#include <sys/stat.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <deque>
#include <limits>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <unordered_set>
#include <utility>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "chunk-store/pack.h"
#include "chunk-store/pack_format.h"
#include "common/file_util.h"
#include "common/kill_point.h"
#include "common/rocksdb_wal.h"
#include "common/status_macros.h"

namespace whorl::chunkstore {
namespace {

// Pack files kept open for reads; beyond this the cache drops one before opening another.
constexpr size_t kMaxCachedReaders = 64;
// Decoded bundles kept for the reads of their other members (a restore reads a bundle's
// members one after the other, on a few threads, and the trees' bundles between): at most this
// many, and no older one once their plain bytes exceed kMaxCachedBundleBytes (16 bundles of
// 2 MiB, the most an agent puts in one). An embedded restore reads 32 MiB ahead of its writers
// (agent/embedded_repository.cc), in the order directories are entered, which is not the
// bundles' order: with 16 MiB its restore of the benchmark's source tree decoded 218 bundles
// 307-323 times, with 32 MiB 248 times (restore peak RSS +16 MiB).
constexpr size_t kMaxCachedBundles = 32;
constexpr size_t kMaxCachedBundleBytes = 32 << 20;

// RocksDB status -> absl::Status with "locator: <context>: " before RocksDB's text.
absl::Status FromRocks(const rocksdb::Status& s, const std::string& context) {
  if (s.ok()) return absl::OkStatus();
  const std::string msg = absl::StrCat("locator: ", context, ": ", s.ToString());
  if (s.IsCorruption()) return absl::DataLossError(msg);
  if (s.IsNotFound()) return absl::NotFoundError(msg);
  if (s.IsIOError() && s.subcode() == rocksdb::Status::kNoSpace) {
    return absl::ResourceExhaustedError(msg);
  }
  if (s.IsIOError() && msg.find("lock") != std::string::npos) {
    return absl::UnavailableError(msg + " (is another process using this store?)");
  }
  return absl::InternalError(msg);
}

std::string PackEndKey(uint32_t pack_id) {
  std::string key(4, '\0');
  for (int i = 0; i < 4; ++i) key[i] = static_cast<char>(pack_id >> (24 - 8 * i));
  return key;
}

std::string PackEndValue(uint64_t end) {
  std::string value(kPackEndValueSize, '\0');
  for (size_t i = 0; i < kPackEndValueSize; ++i) value[i] = static_cast<char>(end >> (8 * i));
  return value;
}

absl::StatusOr<uint32_t> DecodePackEndKey(const rocksdb::Slice& key) {
  if (key.size() != 4) {
    return absl::DataLossError(absl::StrCat("locator: pack end key of ", key.size(), " bytes"));
  }
  uint32_t id = 0;
  for (size_t i = 0; i < 4; ++i) id = (id << 8) | static_cast<unsigned char>(key[i]);
  return id;
}

absl::StatusOr<uint64_t> DecodePackEnd(uint32_t pack_id, const rocksdb::Slice& value) {
  if (value.size() != kPackEndValueSize) {
    return absl::DataLossError(absl::StrCat("locator: pack end of ", PackIdString(pack_id),
                                            ": value of ", value.size(), " bytes, want ",
                                            kPackEndValueSize));
  }
  uint64_t end = 0;
  for (size_t i = 0; i < kPackEndValueSize; ++i) {
    end |= static_cast<uint64_t>(static_cast<unsigned char>(value[i])) << (8 * i);
  }
  return end;
}

rocksdb::Slice KeyOf(const Fingerprint& fp) {
  return rocksdb::Slice(reinterpret_cast<const char*>(fp.bytes.data()), Fingerprint::kSize);
}

std::string Where(uint32_t pack_id, uint64_t offset) {
  return absl::StrCat("pack ", PackIdString(pack_id), " offset ", offset);
}

absl::Status Invalid(const ChunkPut& c, const std::string& what) {
  return absl::InvalidArgumentError(absl::StrCat("chunk ", c.fingerprint.ToHex(), ": ", what));
}

absl::Status InvalidBundle(const ChunkPut& c, const std::string& what) {
  return absl::InvalidArgumentError(absl::StrCat("bundle of ", c.members.size(), " chunks from ",
                                                 c.members[0].fingerprint.ToHex(), ": ", what));
}

// ValidatePut's checks of a bundle (sizes already capped, codec known).
absl::Status ValidateBundlePut(const ChunkPut& c, const ChunkStoreOptions& options) {
  if (c.members.size() > kMaxBundleMembers) {
    return InvalidBundle(c, absl::StrCat("more than ", kMaxBundleMembers, " members"));
  }
  uint64_t want = BundleTableSize(c.members.size());
  for (const BundleMember& m : c.members) want += m.size;
  if (want != c.plain_size) {
    return InvalidBundle(
        c, absl::StrCat("plain size ", c.plain_size, ", but its table and members make ", want));
  }
  if (c.codec == Codec::kNone && c.data.size() != c.plain_size) {
    return InvalidBundle(c, absl::StrCat("codec none but stored size ", c.data.size(),
                                         " != plain size ", c.plain_size));
  }
  if (c.data.empty()) return InvalidBundle(c, "no data");  // its table alone is not empty
  if (!options.verify_puts) return absl::OkStatus();
  absl::StatusOr<std::string> plain = Decode(c.codec, c.data, c.plain_size);
  if (!plain.ok()) {
    return InvalidBundle(c, absl::StrCat("does not decode: ", plain.status().message()));
  }
  absl::StatusOr<std::vector<BundleSlice>> slices = ParseBundle(*plain);
  if (!slices.ok()) return InvalidBundle(c, std::string(slices.status().message()));
  for (size_t i = 0; i < slices->size(); ++i) {
    const BundleSlice& s = (*slices)[i];
    if (s.member != c.members[i]) {
      return InvalidBundle(c, absl::StrCat("member ", i, " of its table is not the one put"));
    }
    const Fingerprint actual = Sha256(std::string_view(*plain).substr(s.offset, s.member.size));
    if (actual != s.member.fingerprint) {
      return InvalidBundle(
          c, absl::StrCat("member ", s.member.fingerprint.ToHex(), " hashes to ", actual.ToHex()));
    }
  }
  return absl::OkStatus();
}

// The checks PutBatch makes on each item before it writes anything.
absl::Status ValidatePut(const ChunkPut& c, const ChunkStoreOptions& options) {
  // Sizes are u32 on disk whatever the option says.
  const uint64_t cap =
      std::min<uint64_t>(options.max_chunk_bytes, std::numeric_limits<uint32_t>::max());
  if (c.plain_size > cap) return Invalid(c, absl::StrCat("plain size ", c.plain_size, " > ", cap));
  if (c.data.size() > cap) {
    return Invalid(c, absl::StrCat("stored size ", c.data.size(), " > ", cap));
  }
  if (!KnownCodec(static_cast<uint64_t>(c.codec))) {
    return Invalid(c, absl::StrCat("unknown codec ", static_cast<int>(c.codec)));
  }
  if (!c.members.empty()) return ValidateBundlePut(c, options);
  if (c.codec == Codec::kNone && c.data.size() != c.plain_size) {
    return Invalid(c, absl::StrCat("codec none but stored size ", c.data.size(), " != plain size ",
                                   c.plain_size));
  }
  if (options.verify_puts) {
    absl::StatusOr<std::string> plain = Decode(c.codec, c.data, c.plain_size);
    if (!plain.ok()) return Invalid(c, absl::StrCat("does not decode: ", plain.status().message()));
    const Fingerprint actual = Sha256(*plain);
    if (actual != c.fingerprint) return Invalid(c, "data hashes to " + actual.ToHex());
  } else if (c.data.empty() && c.plain_size != 0) {
    return Invalid(c, "no data for a non-empty chunk");
  }
  return absl::OkStatus();
}

absl::Status MakeDir(const std::string& path, bool* created) {
  *created = ::mkdir(path.c_str(), 0755) == 0;
  if (!*created && errno != EEXIST) return ErrnoStatus("mkdir", path, errno);
  return absl::OkStatus();
}

std::string Parent(const std::string& path) {
  const size_t slash = path.rfind('/');
  return slash == std::string::npos ? "." : (slash == 0 ? "/" : path.substr(0, slash));
}

// Creates dir/ and dir/packs/ if absent, making their creation durable.
absl::Status MakeStoreDirs(const std::string& dir) {
  bool created = false;
  WHORL_RETURN_IF_ERROR(MakeDir(dir, &created));
  if (created) WHORL_RETURN_IF_ERROR(SyncDir(Parent(dir)));
  WHORL_RETURN_IF_ERROR(MakeDir(dir + "/" + kPacksDirName, &created));
  if (created) WHORL_RETURN_IF_ERROR(SyncDir(dir));
  return absl::OkStatus();
}

// Thread-safe: writers serialize on mu_; reads go to RocksDB (thread-safe) and pread.
class ChunkStoreImpl final : public ChunkStore {
 public:
  ChunkStoreImpl(const std::string& dir, const ChunkStoreOptions& options,
                 std::unique_ptr<rocksdb::DB> db, rocksdb::ColumnFamilyHandle* pack_ends)
      : packs_dir_(dir + "/" + kPacksDirName),
        options_(options),
        db_(std::move(db)),
        pack_ends_(pack_ends),
        latch_("chunk store " + dir) {}
  ~ChunkStoreImpl() override { db_->DestroyColumnFamilyHandle(pack_ends_).PermitUncheckedError(); }

  // Checks pack headers, recovers the newest pack and opens it for appending.
  absl::Status Recover();

  absl::Status PutBatch(const std::vector<ChunkPut>& chunks, uint64_t* newly_stored) override;
  absl::Status Sync() override;
  absl::StatusOr<std::string> Get(const Fingerprint& fp) override;
  absl::Status Read(const Fingerprint& fp,
                    absl::FunctionRef<absl::Status(std::string_view)> use) override;
  absl::StatusOr<Stored> GetStored(const Fingerprint& fp) override;
  absl::StatusOr<Stored> GetStoredAt(const Fingerprint& fp, const ChunkLocation& loc) override;
  absl::StatusOr<Stored> GetBundleRecord(const Fingerprint& fp, const ChunkLocation& loc) override;
  absl::Status Forget(const std::vector<Fingerprint>& fps) override;
  absl::StatusOr<ChunkLocation> Locate(const Fingerprint& fp) override;
  absl::StatusOr<std::vector<bool>> Contains(const std::vector<Fingerprint>& fps) override {
    return LookupMany(fps);
  }
  absl::Status ForEach(
      const std::function<absl::Status(const Fingerprint&, const ChunkLocation&)>& fn) override;
  absl::StatusOr<ChunkStoreStats> Stats() override;
  absl::StatusOr<std::vector<PackProblem>> CheckPacks() override;
  void ForgetDecoded() override;

 private:
  // Checks the header of closed pack `pack_id` and returns the file's size, or nullopt for a
  // damaged one, which goes into damaged_.
  absl::StatusOr<std::optional<uint64_t>> CheckClosedPack(uint32_t pack_id);
  // CheckClosedPack, then indexes the whole records past `indexed_end`, the pack's end in
  // pack_ends (synced records whose unsynced locator write a power loss took).
  absl::Status RecoverClosedPack(uint32_t pack_id, uint64_t indexed_end);
  // Recovers the newest pack's tail and opens it for appending, or leaves it alone (in
  // damaged_ if its header is bad) for the next put to start a new pack.
  absl::Status RecoverNewest() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Every pack's indexed end (pack_ends).
  absl::StatusOr<std::map<uint32_t, uint64_t>> AllIndexedEnds();
  // What CheckPacks says of pack `pack_id` with indexed end `end`: nullopt if sound. Sets
  // `*readable` to how many of its leading bytes can still be read.
  absl::StatusOr<std::optional<std::string>> PackProblemOf(uint32_t pack_id, uint64_t end,
                                                           uint64_t* readable);
  // For each fingerprint, whether the locator holds a (well-formed) entry for it.
  absl::StatusOr<std::vector<bool>> LookupMany(const std::vector<Fingerprint>& fps);
  // The highest pack id the locator indexes records in (0 if none).
  absl::StatusOr<uint32_t> HighestIndexedPack();
  // Where the indexed records of `pack_id` end (kPackHeaderSize if none are).
  absl::StatusOr<uint64_t> IndexedEnd(uint32_t pack_id);
  // Adds locator entries for the records of `pack_id` that it lacks and moves its indexed end
  // to `end` (one synced batch).
  absl::Status IndexRecords(uint32_t pack_id, const std::vector<ScannedRecord>& records,
                            uint64_t end);
  // What a put writes: the items of `chunks` with a chunk neither in the locator nor earlier in
  // `chunks`, and those chunks (`fresh`: the ones to index).
  struct Selection {
    std::vector<const ChunkPut*> todo;
    std::unordered_set<Fingerprint, FingerprintHash> fresh;
  };
  absl::StatusOr<Selection> SelectNew(const std::vector<ChunkPut>& chunks)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Appends, syncs and indexes the selection; on a pack error cuts this batch's bytes off again.
  absl::Status WriteLocked(const Selection& selection) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::Status AppendAll(const Selection& selection, rocksdb::WriteBatch* batch,
                         std::map<uint32_t, uint64_t>* ends) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void UndoAppend(uint32_t start_pack, uint64_t start_size) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Syncs the open pack (if any) and starts the next one.
  absl::Status StartNewPack() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::StatusOr<std::shared_ptr<const PackReader>> Reader(uint32_t pack_id);
  // Reads the record at `loc`, checks it (CRC, and that it is the one the locator describes)
  // and returns its stored bytes (in `*buffer`); `*header` gets its header. Errors name `where`.
  absl::StatusOr<std::string_view> ReadRecordAt(const Fingerprint& fp, const ChunkLocation& loc,
                                                const std::string& where, RecordHeader* header,
                                                RecordBuffer* buffer);
  // Get of a chunk in a bundle: the bundle from the cache, or read and decoded once however many
  // threads ask for its members at the same time.
  absl::StatusOr<std::string> GetFromBundle(const Fingerprint& fp, const ChunkLocation& loc,
                                            const std::string& where);
  // A bundle's plain bytes and its member table, parsed once for all its members' Gets. The
  // bytes are decoded into a buffer never zero-filled first (2 MiB per bundle a restore reads).
  struct DecodedBundle {
    std::unique_ptr<char[]> bytes;
    uint64_t size = 0;
    std::vector<BundleSlice> members;
    std::string_view plain() const { return std::string_view(bytes.get(), size); }
  };
  absl::StatusOr<std::shared_ptr<const DecodedBundle>> ReadBundle(const Fingerprint& fp,
                                                                  const ChunkLocation& loc,
                                                                  const std::string& where);
  // Chunk `fp`'s bytes in its decoded bundle, which `*bundle` is set to hold (alive while the
  // caller keeps it, whatever the cache drops).
  absl::StatusOr<std::string_view> MemberBytes(const Fingerprint& fp, const ChunkLocation& loc,
                                               const std::string& where,
                                               std::shared_ptr<const DecodedBundle>* bundle);
  // The decoded bundle that holds `fp`: from the cache, or read and decoded (once, however
  // many threads ask at the same time).
  absl::StatusOr<std::shared_ptr<const DecodedBundle>> DecodedBundleOf(const Fingerprint& fp,
                                                                       const ChunkLocation& loc,
                                                                       const std::string& where);

  const std::string packs_dir_;
  const ChunkStoreOptions options_;
  const std::unique_ptr<rocksdb::DB> db_;
  rocksdb::ColumnFamilyHandle* const pack_ends_;  // owned; destroyed before db_
  WriteLatch latch_;                              // the first failed locator write
  std::atomic<uint64_t> pack_count_{0};
  // Packs found damaged at open (empty, short or bad header) with why: never read or appended
  // to. Written only by Recover, before the store is shared; read-only afterwards.
  std::map<uint32_t, std::string> damaged_;

  absl::Mutex mu_;
  // The newest pack, open for appending. Null after a failed cut-back: the next put starts a
  // new pack rather than append after bytes of unknown state.
  std::unique_ptr<PackWriter> writer_ ABSL_GUARDED_BY(mu_);
  uint32_t newest_pack_id_ ABSL_GUARDED_BY(mu_) = 0;
  // With sync_locator false: each pack's end past the records the puts since the last Sync
  // wrote, for Sync to write into pack_ends with its synced write. pack_ends only moves in a
  // synced write, so whatever part of the unsynced writes a power loss takes (the WAL's tail or
  // a hole in it), every record they indexed lies past its pack's durable end, where the next
  // open scans and indexes again.
  std::map<uint32_t, uint64_t> unsynced_ends_ ABSL_GUARDED_BY(mu_);
  // Version of the packs StartNewPack creates: 1 until the store holds a bundle.
  uint32_t write_version_ ABSL_GUARDED_BY(mu_) = kOldestPackVersion;

  absl::Mutex readers_mu_;
  // Shared so that eviction never closes an fd another thread is reading from.
  std::map<uint32_t, std::shared_ptr<const PackReader>> readers_ ABSL_GUARDED_BY(readers_mu_);

  // A decoded bundle, or one being read and decoded (`ready` false) by the Get that added it.
  struct CachedBundle {
    std::pair<uint32_t, uint64_t> key;                 // pack id, offset
    std::chrono::steady_clock::time_point decoded_at;  // set before `ready`
    bool ready = false;                                // guarded by bundles_mu_
    std::shared_ptr<const DecodedBundle> bundle;  // set before `ready`; null if the read failed
  };
  absl::Mutex bundles_mu_;
  // Recently decoded bundles, least recently used first.
  std::deque<std::shared_ptr<CachedBundle>> bundles_ ABSL_GUARDED_BY(bundles_mu_);
  // With options_.serve_cached_members, the members of the decoded bundles in bundles_ by
  // fingerprint (of a chunk two of them hold, the one indexed first).
  struct CachedMember {
    std::shared_ptr<CachedBundle> entry;
    uint32_t index = 0;  // in entry->bundle->members
  };
  absl::flat_hash_map<Fingerprint, CachedMember, FingerprintHash> members_
      ABSL_GUARDED_BY(bundles_mu_);
  // Adds the members of `entry` (decoded, in bundles_) to members_, or drops them (it leaves
  // bundles_).
  void Index(const std::shared_ptr<CachedBundle>& entry) ABSL_EXCLUSIVE_LOCKS_REQUIRED(bundles_mu_);
  void Unindex(const CachedBundle& entry) ABSL_EXCLUSIVE_LOCKS_REQUIRED(bundles_mu_);
  // Chunk `fp`'s bytes in a cached decoded bundle (serve_cached_members), with `*bundle` set to
  // hold them; nullopt if none holds it.
  std::optional<std::string_view> FromCachedBundle(const Fingerprint& fp,
                                                   std::shared_ptr<const DecodedBundle>* bundle);
};

absl::Status ChunkStoreImpl::Recover() {
  absl::MutexLock lock(&mu_);
  WHORL_ASSIGN_OR_RETURN(const std::vector<uint32_t> ids, ListPackIds(packs_dir_));
  pack_count_ = ids.size();
  WHORL_ASSIGN_OR_RETURN(const uint32_t highest_indexed, HighestIndexedPack());
  if (options_.read_only) {
    // Every pack as a closed one: its header is checked, its tail is left as it is.
    for (uint32_t id : ids) WHORL_RETURN_IF_ERROR(CheckClosedPack(id).status());
    newest_pack_id_ = std::max(highest_indexed, ids.empty() ? 0 : ids.back());
    return absl::OkStatus();
  }
  using PackEnds = std::map<uint32_t, uint64_t>;
  WHORL_ASSIGN_OR_RETURN(const PackEnds ends, AllIndexedEnds());
  auto recover_closed = [&](uint32_t id) {
    const auto it = ends.find(id);
    return RecoverClosedPack(id, it == ends.end() ? kPackHeaderSize : it->second);
  };
  if (highest_indexed > (ids.empty() ? 0 : ids.back())) {
    // The locator indexes records in a pack newer than any file: it was lost. Never create a
    // pack of that id again (a new record would sit where the locator places a lost chunk, and
    // Get could only report the mismatch): the next put starts the pack after it. The packs
    // still here are closed ones, recovered as such; Get and `check` report the lost chunks.
    for (uint32_t id : ids) WHORL_RETURN_IF_ERROR(recover_closed(id));
    newest_pack_id_ = highest_indexed;
    return absl::OkStatus();
  }
  if (ids.empty()) return StartNewPack();
  for (size_t i = 0; i + 1 < ids.size(); ++i) WHORL_RETURN_IF_ERROR(recover_closed(ids[i]));
  newest_pack_id_ = ids.back();
  return RecoverNewest();
}

absl::StatusOr<std::optional<uint64_t>> ChunkStoreImpl::CheckClosedPack(uint32_t pack_id) {
  const absl::StatusOr<uint64_t> size = CheckPackFile(PackPath(packs_dir_, pack_id));
  if (absl::IsDataLoss(size.status())) {
    // Like a missing pack, it must not lock the whole store: the chunks elsewhere stay
    // readable, and Get and `check` name this pack for the chunks it held.
    damaged_[pack_id] = std::string(size.status().message());
    return std::nullopt;
  }
  if (!size.ok()) return size.status();
  return *size;
}

absl::Status ChunkStoreImpl::RecoverClosedPack(uint32_t pack_id, uint64_t indexed_end) {
  WHORL_ASSIGN_OR_RETURN(const std::optional<uint64_t> size, CheckClosedPack(pack_id));
  // Damaged, or shorter than its indexed end (acknowledged bytes are gone): for CheckPacks to
  // report.
  if (!size.has_value() || *size <= indexed_end) return absl::OkStatus();
  const std::string path = PackPath(packs_dir_, pack_id);
  const absl::StatusOr<PackScan> scan =
      ScanClosedPackTail(path, options_.max_chunk_bytes, indexed_end);
  if (absl::IsDataLoss(scan.status())) return absl::OkStatus();  // not ours to index
  if (!scan.ok()) return scan.status();
  return IndexRecords(pack_id, scan->records, scan->valid_end);
}

absl::Status ChunkStoreImpl::RecoverNewest() {
  const std::string path = PackPath(packs_dir_, newest_pack_id_);
  WHORL_ASSIGN_OR_RETURN(const uint64_t indexed_end, IndexedEnd(newest_pack_id_));
  // With records indexed its header must be whole and good (with none, a short header is an
  // interrupted creation, which recovery repairs).
  if (indexed_end > kPackHeaderSize) {
    // Acknowledged records behind a header that is gone: treated as a damaged closed pack; the
    // next put starts a new pack (writer_ stays null).
    WHORL_ASSIGN_OR_RETURN(const std::optional<uint64_t> size, CheckClosedPack(newest_pack_id_));
    if (!size.has_value()) return absl::OkStatus();
  }
  absl::StatusOr<PackScan> scan = RecoverNewestPack(path, options_.max_chunk_bytes, indexed_end);
  if (absl::IsDataLoss(scan.status())) {
    if (indexed_end <= kPackHeaderSize) {
      // Nothing indexed, but a whole header that is not a pack header: not ours to cut or
      // rewrite. Never appended to; CheckPacks reports it.
      damaged_[newest_pack_id_] = std::string(scan.status().message());
    }
    // Otherwise acknowledged bytes of the newest pack are gone (the file was cut or replaced):
    // leave it as it is for `check` to report. Either way the next put starts a new pack, so
    // that no new record lands at an offset the locator gives to an old one.
    return absl::OkStatus();
  }
  if (!scan.ok()) return scan.status();
  WHORL_RETURN_IF_ERROR(IndexRecords(newest_pack_id_, scan->records, scan->valid_end));
  WHORL_ASSIGN_OR_RETURN(writer_, PackWriter::OpenForAppend(packs_dir_, newest_pack_id_));
  write_version_ = writer_->version();
  return absl::OkStatus();
}

absl::StatusOr<uint32_t> ChunkStoreImpl::HighestIndexedPack() {
  std::unique_ptr<rocksdb::Iterator> it(db_->NewIterator(rocksdb::ReadOptions(), pack_ends_));
  it->SeekToLast();
  if (!it->Valid()) {
    WHORL_RETURN_IF_ERROR(FromRocks(it->status(), "pack ends"));
    return 0;
  }
  return DecodePackEndKey(it->key());
}

absl::StatusOr<uint64_t> ChunkStoreImpl::IndexedEnd(uint32_t pack_id) {
  std::string value;
  const rocksdb::Status s =
      db_->Get(rocksdb::ReadOptions(), pack_ends_, PackEndKey(pack_id), &value);
  if (s.IsNotFound()) return kPackHeaderSize;
  WHORL_RETURN_IF_ERROR(FromRocks(s, "pack end of " + PackIdString(pack_id)));
  return DecodePackEnd(pack_id, value);
}

absl::StatusOr<std::map<uint32_t, uint64_t>> ChunkStoreImpl::AllIndexedEnds() {
  std::map<uint32_t, uint64_t> ends;
  std::unique_ptr<rocksdb::Iterator> it(db_->NewIterator(rocksdb::ReadOptions(), pack_ends_));
  for (it->SeekToFirst(); it->Valid(); it->Next()) {
    WHORL_ASSIGN_OR_RETURN(const uint32_t id, DecodePackEndKey(it->key()));
    WHORL_ASSIGN_OR_RETURN(ends[id], DecodePackEnd(id, it->value()));
  }
  WHORL_RETURN_IF_ERROR(FromRocks(it->status(), "pack ends"));
  return ends;
}

absl::Status ChunkStoreImpl::IndexRecords(uint32_t pack_id,
                                          const std::vector<ScannedRecord>& records, uint64_t end) {
  if (records.empty()) return absl::OkStatus();
  // The chunks and where they are: a record's own, or each member of a bundle.
  std::vector<Fingerprint> fps;
  std::vector<ChunkLocation> locations;
  for (const ScannedRecord& r : records) {
    const RecordHeader& h = r.header;
    if (!h.bundle) {
      fps.push_back(h.fingerprint);
      locations.push_back(ChunkLocation{pack_id, r.offset, h.stored_size, h.plain_size, h.codec});
      continue;
    }
    std::vector<BundleMember> table;
    for (const BundleSlice& m : r.members) table.push_back(m.member);
    const std::vector<uint32_t> shares =
        ApportionBytes(kRecordHeaderSize + uint64_t{h.stored_size}, table);
    for (size_t i = 0; i < r.members.size(); ++i) {
      fps.push_back(r.members[i].member.fingerprint);
      locations.push_back(ChunkLocation{pack_id, r.offset, h.stored_size, r.members[i].member.size,
                                        h.codec, true, r.members[i].offset, shares[i]});
    }
  }
  WHORL_ASSIGN_OR_RETURN(const std::vector<bool> present, LookupMany(fps));
  rocksdb::WriteBatch batch;
  std::unordered_set<Fingerprint, FingerprintHash> added;
  for (size_t i = 0; i < fps.size(); ++i) {
    if (present[i] || !added.insert(fps[i]).second) continue;
    batch.Put(KeyOf(fps[i]), EncodeLocatorValue(locations[i]));
  }
  batch.Put(pack_ends_, PackEndKey(pack_id), PackEndValue(end));
  rocksdb::WriteOptions wo;
  wo.sync = true;
  WHORL_KILL_POINT("locator.reindex.before");
  return FromRocks(db_->Write(wo, &batch), "re-index pack " + PackIdString(pack_id));
}

absl::StatusOr<std::vector<bool>> ChunkStoreImpl::LookupMany(const std::vector<Fingerprint>& fps) {
  std::vector<rocksdb::Slice> keys;
  keys.reserve(fps.size());
  for (const Fingerprint& fp : fps) keys.push_back(KeyOf(fp));
  std::vector<std::string> values;
  const std::vector<rocksdb::Status> statuses =
      db_->MultiGet(rocksdb::ReadOptions(), keys, &values);
  std::vector<bool> found(fps.size());
  for (size_t i = 0; i < fps.size(); ++i) {
    if (statuses[i].IsNotFound()) continue;
    WHORL_RETURN_IF_ERROR(FromRocks(statuses[i], "lookup"));
    WHORL_RETURN_IF_ERROR(
        Annotate(DecodeLocatorValue(values[i]).status(), "locator entry " + fps[i].ToHex()));
    found[i] = true;
  }
  return found;
}

absl::Status ChunkStoreImpl::PutBatch(const std::vector<ChunkPut>& chunks, uint64_t* newly_stored) {
  if (newly_stored != nullptr) *newly_stored = 0;
  // Verification (decode + SHA-256) is the costly part: done before taking the lock.
  for (const ChunkPut& c : chunks) WHORL_RETURN_IF_ERROR(ValidatePut(c, options_));
  if (chunks.empty()) return absl::OkStatus();
  absl::MutexLock lock(&mu_);
  WHORL_ASSIGN_OR_RETURN(const Selection selection, SelectNew(chunks));
  if (selection.todo.empty()) return absl::OkStatus();
  WHORL_RETURN_IF_ERROR(WriteLocked(selection));
  if (newly_stored != nullptr) *newly_stored = selection.fresh.size();
  return absl::OkStatus();
}

absl::Status ChunkStoreImpl::Sync() {
  if (options_.read_only) {
    return absl::FailedPreconditionError(
        absl::StrCat("chunk store ", packs_dir_, ": opened read-only, it takes no writes"));
  }
  if (options_.sync_locator) return absl::OkStatus();
  // Under mu_: a put's pack sync and locator write come before any Sync that follows it.
  absl::MutexLock lock(&mu_);
  WHORL_RETURN_IF_ERROR(latch_.Check());
  if (unsynced_ends_.empty()) return absl::OkStatus();  // no put since the last Sync
  // One synced write: it syncs the WAL, and so every unsynced put before it, and moves the
  // packs' ends past their records.
  rocksdb::WriteBatch batch;
  for (const auto& [pack_id, end] : unsynced_ends_) {
    batch.Put(pack_ends_, PackEndKey(pack_id), PackEndValue(end));
  }
  rocksdb::WriteOptions wo;
  wo.sync = true;
  WHORL_KILL_POINT("locator.sync.before");
  WHORL_RETURN_IF_ERROR(latch_.Note(FromRocks(db_->Write(wo, &batch), "sync")));
  unsynced_ends_.clear();
  return absl::OkStatus();
}

absl::StatusOr<ChunkStoreImpl::Selection> ChunkStoreImpl::SelectNew(
    const std::vector<ChunkPut>& chunks) {
  std::vector<Fingerprint> fps;
  for (const ChunkPut& c : chunks) {
    if (c.members.empty()) fps.push_back(c.fingerprint);
    for (const BundleMember& m : c.members) fps.push_back(m.fingerprint);
  }
  WHORL_ASSIGN_OR_RETURN(const std::vector<bool> present, LookupMany(fps));
  Selection out;
  std::unordered_set<Fingerprint, FingerprintHash> seen;
  size_t i = 0;
  for (const ChunkPut& c : chunks) {
    bool any_new = false;
    for (size_t n = std::max<size_t>(c.members.size(), 1); n > 0; --n, ++i) {
      if (present[i] || !seen.insert(fps[i]).second) continue;
      out.fresh.insert(fps[i]);
      any_new = true;
    }
    if (any_new) out.todo.push_back(&c);
  }
  return out;
}

absl::Status ChunkStoreImpl::WriteLocked(const Selection& selection) {
  if (options_.read_only) {
    return absl::FailedPreconditionError(
        absl::StrCat("chunk store ", packs_dir_, ": opened read-only, it takes no writes"));
  }
  WHORL_RETURN_IF_ERROR(latch_.Check());
  uint64_t need = 0;
  for (const ChunkPut* c : selection.todo) need += kRecordHeaderSize + c->data.size();
  const uint64_t reserve = options_.reserve_bytes != 0
                               ? options_.reserve_bytes
                               : 2 * options_.locator_write_buffer_bytes + (1 << 20);
  WHORL_RETURN_IF_ERROR(CheckFreeSpace(packs_dir_, need, reserve));
  if (writer_ == nullptr) WHORL_RETURN_IF_ERROR(StartNewPack());
  const uint32_t start_pack = writer_->pack_id();
  const uint64_t start_size = writer_->size();
  rocksdb::WriteBatch batch;
  std::map<uint32_t, uint64_t> ends;
  absl::Status s = AppendAll(selection, &batch, &ends);
  if (s.ok()) s = writer_->Sync();
  if (!s.ok()) {
    UndoAppend(start_pack, start_size);
    return s;
  }
  // The records are durable: only now may the locator point at them. If this write fails the
  // records stay (unindexed, as after a crash here): RocksDB may still have logged part of the
  // batch, and an entry must never point at bytes we cut.
  if (options_.sync_locator) {
    for (const auto& [pack_id, end] : ends) {
      batch.Put(pack_ends_, PackEndKey(pack_id), PackEndValue(end));
    }
  }
  rocksdb::WriteOptions wo;
  wo.sync = options_.sync_locator;
  WHORL_KILL_POINT("locator.put.before");
  WHORL_RETURN_IF_ERROR(latch_.Note(FromRocks(db_->Write(wo, &batch), "write")));
  WHORL_KILL_POINT("locator.put.after");
  if (!options_.sync_locator) {
    for (const auto& [pack_id, end] : ends) unsynced_ends_[pack_id] = end;
  }
  return absl::OkStatus();
}

absl::Status ChunkStoreImpl::AppendAll(const Selection& selection, rocksdb::WriteBatch* batch,
                                       std::map<uint32_t, uint64_t>* ends) {
  // Each new chunk is indexed once, where it is first written.
  std::unordered_set<Fingerprint, FingerprintHash> to_index = selection.fresh;
  for (const ChunkPut* c : selection.todo) {
    const bool bundle = !c->members.empty();
    // A version 1 pack never holds a bundle, nor an older pack an LZ4 record: a build that
    // reads only the older version would take it for a torn record and cut it.
    if (bundle) write_version_ = std::max(write_version_, kBundlePackVersion);
    if (c->codec == Codec::kLz4) write_version_ = std::max(write_version_, kLz4PackVersion);
    if (writer_->size() >= options_.max_pack_bytes || writer_->version() < write_version_) {
      WHORL_RETURN_IF_ERROR(StartNewPack());
    }
    // ValidatePut capped both sizes at 2^32 - 1.
    const RecordHeader h{c->codec, static_cast<uint32_t>(c->plain_size),
                         static_cast<uint32_t>(c->data.size()),
                         bundle ? BundleId(c->members) : c->fingerprint, bundle};
    // Written by the Sync that ends the batch (or starts the next pack): one writev for all.
    const uint64_t offset = writer_->Queue(h, c->data);
    if (!bundle) {
      to_index.erase(c->fingerprint);
      batch->Put(KeyOf(c->fingerprint),
                 EncodeLocatorValue(ChunkLocation{writer_->pack_id(), offset, h.stored_size,
                                                  h.plain_size, h.codec}));
    } else {
      const std::vector<uint32_t> shares =
          ApportionBytes(kRecordHeaderSize + uint64_t{h.stored_size}, c->members);
      uint32_t inner = static_cast<uint32_t>(BundleTableSize(c->members.size()));
      for (size_t i = 0; i < c->members.size(); ++i) {
        const BundleMember& m = c->members[i];
        if (to_index.erase(m.fingerprint) != 0) {
          batch->Put(KeyOf(m.fingerprint),
                     EncodeLocatorValue(ChunkLocation{writer_->pack_id(), offset, h.stored_size,
                                                      m.size, h.codec, true, inner, shares[i]}));
        }
        inner += m.size;
      }
    }
    (*ends)[writer_->pack_id()] = writer_->size();
  }
  return absl::OkStatus();
}

void ChunkStoreImpl::UndoAppend(uint32_t start_pack, uint64_t start_size) {
  // Records this batch left in packs it already closed stay there, unindexed until the next
  // open scans that pack's tail past its indexed end and indexes them.
  const uint64_t keep = writer_->pack_id() == start_pack ? start_size : kPackHeaderSize;
  if (!writer_->TruncateTo(keep).ok()) writer_.reset();
}

absl::Status ChunkStoreImpl::StartNewPack() {
  if (writer_ != nullptr) WHORL_RETURN_IF_ERROR(writer_->Sync());
  if (newest_pack_id_ >= kMaxPackId) {
    return absl::ResourceExhaustedError(absl::StrCat("pack ids exhausted (", kMaxPackId, ")"));
  }
  WHORL_ASSIGN_OR_RETURN(std::unique_ptr<PackWriter> next,
                         PackWriter::Create(packs_dir_, newest_pack_id_ + 1, write_version_));
  writer_ = std::move(next);
  newest_pack_id_ = writer_->pack_id();
  ++pack_count_;
  if (!options_.sync_locator) {
    // The id is taken before any entry names it (its end at the header's: nothing indexed yet),
    // so that HighestIndexedPack knows it should the file be lost; the puts' own batches leave
    // pack_ends alone until Sync.
    rocksdb::WriteBatch batch;
    batch.Put(pack_ends_, PackEndKey(newest_pack_id_), PackEndValue(kPackHeaderSize));
    WHORL_RETURN_IF_ERROR(
        latch_.Note(FromRocks(db_->Write(rocksdb::WriteOptions(), &batch), "new pack")));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::shared_ptr<const PackReader>> ChunkStoreImpl::Reader(uint32_t pack_id) {
  absl::MutexLock lock(&readers_mu_);
  if (auto it = readers_.find(pack_id); it != readers_.end()) return it->second;
  WHORL_ASSIGN_OR_RETURN(std::shared_ptr<const PackReader> reader,
                         PackReader::Open(packs_dir_, pack_id));
  if (readers_.size() >= kMaxCachedReaders) readers_.erase(readers_.begin());
  readers_.emplace(pack_id, reader);
  return reader;
}

absl::Status ChunkStoreImpl::Forget(const std::vector<Fingerprint>& fps) {
  if (options_.read_only) {
    return absl::FailedPreconditionError(
        absl::StrCat("chunk store ", packs_dir_, ": opened read-only, it takes no writes"));
  }
  absl::MutexLock lock(&mu_);
  WHORL_RETURN_IF_ERROR(latch_.Check());
  rocksdb::WriteBatch batch;
  for (const Fingerprint& fp : fps) batch.Delete(KeyOf(fp));
  if (batch.Count() == 0) return absl::OkStatus();
  rocksdb::WriteOptions wo;
  wo.sync = true;
  WHORL_RETURN_IF_ERROR(latch_.Note(FromRocks(db_->Write(wo, &batch), "forget")));
  ForgetDecoded();
  return absl::OkStatus();
}

absl::StatusOr<ChunkLocation> ChunkStoreImpl::Locate(const Fingerprint& fp) {
  std::string value;
  const rocksdb::Status s = db_->Get(rocksdb::ReadOptions(), KeyOf(fp), &value);
  if (s.IsNotFound()) return absl::NotFoundError("chunk " + fp.ToHex() + " not found");
  WHORL_RETURN_IF_ERROR(FromRocks(s, "get"));
  absl::StatusOr<ChunkLocation> location = DecodeLocatorValue(value);
  if (!location.ok()) return Annotate(location.status(), "locator entry " + fp.ToHex());
  return location;
}

absl::StatusOr<std::string_view> ChunkStoreImpl::ReadRecordAt(const Fingerprint& fp,
                                                              const ChunkLocation& loc,
                                                              const std::string& where,
                                                              RecordHeader* header,
                                                              RecordBuffer* buffer) {
  if (auto it = damaged_.find(loc.pack_id); it != damaged_.end()) {
    return absl::DataLossError(absl::StrCat(where, ": pack file damaged: ", it->second));
  }
  absl::StatusOr<std::shared_ptr<const PackReader>> reader = Reader(loc.pack_id);
  if (absl::IsNotFound(reader.status())) {
    // The locator names it, so the store lost it.
    return absl::DataLossError(
        absl::StrCat(where, ": pack file missing: ", reader.status().message()));
  }
  if (!reader.ok()) return Annotate(reader.status(), where);
  absl::StatusOr<RecordHeader> h = (*reader)->ReadRecord(loc.offset, loc.stored_size, buffer);
  if (!h.ok()) return Annotate(h.status(), where);
  WHORL_RETURN_IF_ERROR(Annotate(CheckRecordMatches(*h, fp, loc), where));
  *header = *h;
  return buffer->data();
}

absl::StatusOr<std::string> ChunkStoreImpl::Get(const Fingerprint& fp) {
  std::shared_ptr<const DecodedBundle> cached;
  if (std::optional<std::string_view> member = FromCachedBundle(fp, &cached)) {
    return std::string(*member);
  }
  WHORL_ASSIGN_OR_RETURN(const ChunkLocation loc, Locate(fp));
  const std::string where = Where(loc.pack_id, loc.offset);
  if (loc.bundled) return GetFromBundle(fp, loc, where);
  RecordHeader header;
  RecordBuffer buffer;
  WHORL_ASSIGN_OR_RETURN(const std::string_view data,
                         ReadRecordAt(fp, loc, where, &header, &buffer));
  if (loc.codec == Codec::kNone && data.size() == loc.plain_size) return std::string(data);
  absl::StatusOr<std::string> plain = Decode(loc.codec, data, loc.plain_size);
  if (!plain.ok()) {
    return absl::DataLossError(absl::StrCat(where, ": ", plain.status().message()));
  }
  return plain;
}

absl::Status ChunkStoreImpl::Read(const Fingerprint& fp,
                                  absl::FunctionRef<absl::Status(std::string_view)> use) {
  {
    std::shared_ptr<const DecodedBundle> cached;  // holds the bytes for the call
    if (std::optional<std::string_view> member = FromCachedBundle(fp, &cached)) {
      return use(*member);
    }
  }
  WHORL_ASSIGN_OR_RETURN(const ChunkLocation loc, Locate(fp));
  const std::string where = Where(loc.pack_id, loc.offset);
  if (loc.bundled) {
    // `bundle` keeps the bytes alive for the call, whatever the cache drops meanwhile.
    std::shared_ptr<const DecodedBundle> bundle;
    WHORL_ASSIGN_OR_RETURN(const std::string_view member, MemberBytes(fp, loc, where, &bundle));
    return use(member);
  }
  RecordHeader header;
  RecordBuffer buffer;
  WHORL_ASSIGN_OR_RETURN(const std::string_view data,
                         ReadRecordAt(fp, loc, where, &header, &buffer));
  if (loc.codec == Codec::kNone && data.size() == loc.plain_size) return use(data);
  std::unique_ptr<char[]> plain;
  const absl::Status decoded = DecodeInto(loc.codec, data, loc.plain_size, [&plain](uint64_t n) {
    plain = std::make_unique_for_overwrite<char[]>(n);
    return plain.get();
  });
  if (!decoded.ok()) return absl::DataLossError(absl::StrCat(where, ": ", decoded.message()));
  return use(std::string_view(plain.get(), loc.plain_size));
}

absl::StatusOr<ChunkStore::Stored> ChunkStoreImpl::GetStored(const Fingerprint& fp) {
  WHORL_ASSIGN_OR_RETURN(const ChunkLocation loc, Locate(fp));
  return GetStoredAt(fp, loc);
}

absl::StatusOr<ChunkStore::Stored> ChunkStoreImpl::GetStoredAt(const Fingerprint& fp,
                                                               const ChunkLocation& loc) {
  const std::string where = Where(loc.pack_id, loc.offset);
  Stored out;
  out.plain_size = loc.plain_size;
  if (loc.bundled) {
    WHORL_ASSIGN_OR_RETURN(out.data, GetFromBundle(fp, loc, where));
    return out;
  }
  RecordHeader header;
  RecordBuffer buffer;
  WHORL_ASSIGN_OR_RETURN(const std::string_view data,
                         ReadRecordAt(fp, loc, where, &header, &buffer));
  out.data = std::string(data);
  out.codec = loc.codec;
  if (out.codec == Codec::kNone && out.data.size() != out.plain_size) {
    return absl::DataLossError(absl::StrCat(where, ": stored size differs from plain size"));
  }
  return out;
}

absl::StatusOr<ChunkStore::Stored> ChunkStoreImpl::GetBundleRecord(const Fingerprint& fp,
                                                                   const ChunkLocation& loc) {
  const std::string where = Where(loc.pack_id, loc.offset);
  if (!loc.bundled) {
    return absl::InvalidArgumentError(
        absl::StrCat(where, ": chunk ", fp.ToHex(), " is not bundled"));
  }
  RecordHeader header;
  Stored out;
  RecordBuffer buffer;
  WHORL_ASSIGN_OR_RETURN(const std::string_view data,
                         ReadRecordAt(fp, loc, where, &header, &buffer));
  out.data = std::string(data);
  out.codec = loc.codec;
  out.plain_size = header.plain_size;
  if (out.codec == Codec::kNone && out.data.size() != out.plain_size) {
    return absl::DataLossError(absl::StrCat(where, ": stored size differs from plain size"));
  }
  return out;
}

absl::StatusOr<std::string> ChunkStoreImpl::GetFromBundle(const Fingerprint& fp,
                                                          const ChunkLocation& loc,
                                                          const std::string& where) {
  std::shared_ptr<const DecodedBundle> bundle;
  WHORL_ASSIGN_OR_RETURN(const std::string_view member, MemberBytes(fp, loc, where, &bundle));
  return std::string(member);
}

absl::StatusOr<std::string_view> ChunkStoreImpl::MemberBytes(
    const Fingerprint& fp, const ChunkLocation& loc, const std::string& where,
    std::shared_ptr<const DecodedBundle>* bundle) {
  WHORL_ASSIGN_OR_RETURN(*bundle, DecodedBundleOf(fp, loc, where));
  absl::StatusOr<std::string_view> member =
      FindBundleMember((*bundle)->plain(), (*bundle)->members, fp, loc);
  if (!member.ok()) return Annotate(member.status(), where);
  return member;
}

absl::StatusOr<std::shared_ptr<const ChunkStoreImpl::DecodedBundle>>
ChunkStoreImpl::DecodedBundleOf(const Fingerprint& fp, const ChunkLocation& loc,
                                const std::string& where) {
  const std::pair<uint32_t, uint64_t> key(loc.pack_id, loc.offset);
  std::shared_ptr<CachedBundle> entry;
  bool mine = false;  // this call reads and decodes it; others wait for it
  {
    absl::MutexLock lock(&bundles_mu_);
    const auto now = std::chrono::steady_clock::now();
    // Out of date: its pack is read again (decoded_bundle_ttl).
    std::erase_if(bundles_, [&](const std::shared_ptr<CachedBundle>& e) {
      const bool old = e->ready && now - e->decoded_at > options_.decoded_bundle_ttl;
      if (old) Unindex(*e);
      return old;
    });
    for (auto it = bundles_.begin(); it != bundles_.end(); ++it) {
      if ((*it)->key != key) continue;
      // Used again: the newest now (a restore reads the trees' bundles between those of the
      // files, and must not decode them again for every directory).
      entry = *it;
      bundles_.erase(it);
      bundles_.push_back(entry);
      break;
    }
    if (entry == nullptr) {
      entry = std::make_shared<CachedBundle>();
      entry->key = key;
      mine = true;
      if (bundles_.size() >= kMaxCachedBundles) {
        Unindex(*bundles_.front());
        bundles_.pop_front();
      }
      bundles_.push_back(entry);
    } else {
      bundles_mu_.Await(absl::Condition(&entry->ready));
    }
  }
  std::shared_ptr<const DecodedBundle> bundle = mine ? nullptr : entry->bundle;
  if (bundle == nullptr) {
    // Ours to read, or the reader that went first failed: read it here (and report our own
    // error, if it fails again).
    absl::StatusOr<std::shared_ptr<const DecodedBundle>> read = ReadBundle(fp, loc, where);
    if (mine) {
      absl::MutexLock lock(&bundles_mu_);
      entry->bundle = read.ok() ? *read : nullptr;
      entry->decoded_at = std::chrono::steady_clock::now();
      entry->ready = true;
      if (!read.ok()) std::erase(bundles_, entry);
      if (read.ok()) Index(entry);
      // The oldest go once the decoded bytes kept exceed the cap (this one stays).
      size_t kept = 0;
      for (const std::shared_ptr<CachedBundle>& e : bundles_) {
        if (e->bundle != nullptr) kept += e->bundle->size;
      }
      while (kept > kMaxCachedBundleBytes && bundles_.size() > 1 && bundles_.front() != entry) {
        if (bundles_.front()->bundle != nullptr) kept -= bundles_.front()->bundle->size;
        Unindex(*bundles_.front());
        bundles_.pop_front();
      }
    }
    if (!read.ok()) return read.status();
    bundle = *std::move(read);
  }
  return bundle;
}

absl::StatusOr<std::shared_ptr<const ChunkStoreImpl::DecodedBundle>> ChunkStoreImpl::ReadBundle(
    const Fingerprint& fp, const ChunkLocation& loc, const std::string& where) {
  RecordHeader header;
  RecordBuffer buffer;
  WHORL_ASSIGN_OR_RETURN(const std::string_view data,
                         ReadRecordAt(fp, loc, where, &header, &buffer));
  auto out = std::make_shared<DecodedBundle>();
  const absl::Status decoded = DecodeInto(loc.codec, data, header.plain_size, [&out](uint64_t n) {
    out->bytes = std::make_unique_for_overwrite<char[]>(n);
    out->size = n;
    return out->bytes.get();
  });
  if (!decoded.ok()) return absl::DataLossError(absl::StrCat(where, ": ", decoded.message()));
  absl::StatusOr<std::vector<BundleSlice>> members = ParseBundle(out->plain());
  if (!members.ok()) return Annotate(members.status(), where);
  out->members = *std::move(members);
  return out;
}

void ChunkStoreImpl::ForgetDecoded() {
  absl::MutexLock lock(&bundles_mu_);
  bundles_.clear();
  members_.clear();
}

void ChunkStoreImpl::Index(const std::shared_ptr<CachedBundle>& entry) {
  // Not if it left the cache while it was read (evicted before it was ready): nothing would
  // drop its members again.
  if (!options_.serve_cached_members || entry->bundle == nullptr ||
      std::find(bundles_.begin(), bundles_.end(), entry) == bundles_.end()) {
    return;
  }
  const std::vector<BundleSlice>& members = entry->bundle->members;
  for (uint32_t i = 0; i < members.size(); ++i) {
    members_.try_emplace(members[i].member.fingerprint, CachedMember{entry, i});
  }
}

void ChunkStoreImpl::Unindex(const CachedBundle& entry) {
  if (members_.empty() || entry.bundle == nullptr) return;
  for (const BundleSlice& slice : entry.bundle->members) {
    auto it = members_.find(slice.member.fingerprint);
    if (it != members_.end() && it->second.entry.get() == &entry) members_.erase(it);
  }
}

std::optional<std::string_view> ChunkStoreImpl::FromCachedBundle(
    const Fingerprint& fp, std::shared_ptr<const DecodedBundle>* bundle) {
  if (!options_.serve_cached_members) return std::nullopt;
  absl::MutexLock lock(&bundles_mu_);
  const auto it = members_.find(fp);
  if (it == members_.end()) return std::nullopt;
  const std::shared_ptr<CachedBundle> entry = it->second.entry;
  if (std::chrono::steady_clock::now() - entry->decoded_at > options_.decoded_bundle_ttl) {
    return std::nullopt;  // out of date: read through the locator, which drops it
  }
  if (bundles_.back() != entry) {  // used again: the newest now, as DecodedBundleOf does
    if (auto pos = std::find(bundles_.begin(), bundles_.end(), entry); pos != bundles_.end()) {
      bundles_.erase(pos);
      bundles_.push_back(entry);
    }
  }
  *bundle = entry->bundle;
  const BundleSlice& slice = entry->bundle->members[it->second.index];
  return entry->bundle->plain().substr(slice.offset, slice.member.size);
}

absl::Status ChunkStoreImpl::ForEach(
    const std::function<absl::Status(const Fingerprint&, const ChunkLocation&)>& fn) {
  std::unique_ptr<rocksdb::Iterator> it(db_->NewIterator(rocksdb::ReadOptions()));
  for (it->SeekToFirst(); it->Valid(); it->Next()) {
    const std::string_view key(it->key().data(), it->key().size());
    absl::StatusOr<Fingerprint> fp = Fingerprint::FromBytes(key);
    if (!fp.ok()) {
      return absl::DataLossError(absl::StrCat("locator: key of ", key.size(), " bytes, want ",
                                              Fingerprint::kSize, ": ", HexEncode(key)));
    }
    absl::StatusOr<ChunkLocation> loc =
        DecodeLocatorValue(std::string_view(it->value().data(), it->value().size()));
    if (!loc.ok()) return Annotate(loc.status(), "locator entry " + fp->ToHex());
    WHORL_RETURN_IF_ERROR(fn(*fp, *loc));
  }
  return FromRocks(it->status(), "scan");
}

absl::StatusOr<ChunkStoreStats> ChunkStoreImpl::Stats() {
  ChunkStoreStats stats;
  WHORL_RETURN_IF_ERROR(ForEach([&stats](const Fingerprint&, const ChunkLocation& loc) {
    ++stats.chunks;
    stats.stored_bytes += loc.bundled ? loc.share : kRecordHeaderSize + loc.stored_size;
    stats.plain_bytes += loc.plain_size;
    return absl::OkStatus();
  }));
  stats.packs = pack_count_;
  return stats;
}

absl::StatusOr<std::vector<PackProblem>> ChunkStoreImpl::CheckPacks() {
  uint32_t newest = 0;
  {
    absl::MutexLock lock(&mu_);
    newest = newest_pack_id_;
  }
  // Ends first, files second: a pack file only grows past the end read here (a failed put cuts
  // back to where it started, at or after it), so a put racing with this never looks like damage.
  using PackEnds = std::map<uint32_t, uint64_t>;
  WHORL_ASSIGN_OR_RETURN(const PackEnds ends, AllIndexedEnds());
  WHORL_ASSIGN_OR_RETURN(const std::vector<uint32_t> files, ListPackIds(packs_dir_));
  std::set<uint32_t> ids(files.begin(), files.end());
  for (const auto& [id, end] : ends) ids.insert(id);
  std::map<uint32_t, PackProblem> problems;
  std::map<uint32_t, uint64_t> readable;
  for (uint32_t id : ids) {
    if (id > newest) continue;  // being created by a put right now
    const auto end = ends.find(id);
    WHORL_ASSIGN_OR_RETURN(
        std::optional<std::string> problem,
        PackProblemOf(id, end == ends.end() ? kPackHeaderSize : end->second, &readable[id]));
    if (problem.has_value()) problems[id] = PackProblem{id, *std::move(problem), {}};
  }
  if (!problems.empty()) {
    WHORL_RETURN_IF_ERROR(ForEach([&](const Fingerprint& fp, const ChunkLocation& loc) {
      auto it = problems.find(loc.pack_id);
      if (it != problems.end() &&
          loc.offset + kRecordHeaderSize + loc.stored_size > readable[loc.pack_id]) {
        it->second.lost.push_back(fp);
      }
      return absl::OkStatus();
    }));
  }
  std::vector<PackProblem> out;
  for (auto& [id, p] : problems) out.push_back(std::move(p));
  return out;
}

absl::StatusOr<std::optional<std::string>> ChunkStoreImpl::PackProblemOf(uint32_t pack_id,
                                                                         uint64_t end,
                                                                         uint64_t* readable) {
  *readable = 0;
  if (auto it = damaged_.find(pack_id); it != damaged_.end()) return it->second;
  const std::string path = PackPath(packs_dir_, pack_id);
  const absl::StatusOr<uint64_t> size = CheckPackFile(path);
  if (absl::IsNotFound(size.status())) {
    // No file and nothing indexed in it is no problem (a pack id never used).
    if (end <= kPackHeaderSize) return std::nullopt;
    return path + ": pack file missing";
  }
  if (absl::IsDataLoss(size.status())) return std::string(size.status().message());
  if (!size.ok()) return size.status();
  *readable = *size;
  if (*size >= end) return std::nullopt;
  return absl::StrCat(path, ": ", *size, " bytes, but its indexed records end at ", end);
}

}  // namespace

absl::StatusOr<std::vector<Fingerprint>> ChunkStore::ListInPackOrder() {
  struct Placed {
    uint32_t pack_id;
    uint64_t offset;
    uint32_t inner_offset;
    Fingerprint fp;
    auto operator<=>(const Placed&) const = default;
  };
  std::vector<Placed> placed;
  WHORL_RETURN_IF_ERROR(
      ForEach([&placed](const Fingerprint& fp, const ChunkLocation& loc) -> absl::Status {
        placed.push_back({loc.pack_id, loc.offset, loc.inner_offset, fp});
        return absl::OkStatus();
      }));
  std::sort(placed.begin(), placed.end());
  std::vector<Fingerprint> out;
  out.reserve(placed.size());
  for (const Placed& p : placed) out.push_back(p.fp);
  return out;
}

absl::StatusOr<std::unique_ptr<ChunkStore>> ChunkStore::Open(const std::string& dir,
                                                             const ChunkStoreOptions& options) {
  if (!options.read_only) WHORL_RETURN_IF_ERROR(MakeStoreDirs(dir));
  rocksdb::DBOptions db_options;
  db_options.create_if_missing = true;
  db_options.create_missing_column_families = true;
  db_options.info_log = NewRocksLogger(options.log, options.log_level);
  db_options.wal_recovery_mode = kWalRecoveryMode;
  // The locator's memtable: ~60 bytes per chunk. A small one keeps the agent's memory flat
  // (an embedded repository's first backup would otherwise grow it to RocksDB's 64 MiB).
  rocksdb::ColumnFamilyOptions locator_options;
  locator_options.write_buffer_size = options.locator_write_buffer_bytes;
  // Values (pack, offset, sizes) shrink; keys (SHA-256) do not. zstd instead of RocksDB's
  // default Snappy, in 16 KiB blocks instead of 4 KiB: 2.78 -> 2.50 -> 2.34 MB for the
  // benchmark's source tree after 9 backups (a Get that misses the block cache decodes 16 KiB).
  locator_options.compression = rocksdb::kZSTD;
  rocksdb::BlockBasedTableOptions locator_table;
  locator_table.block_size = 16 << 10;
  // A put first looks its fingerprints up (LookupMany), nearly all absent: without a filter
  // each lookup read and decoded a 16 KiB block of every table, and the block cache kept them
  // (the 2 GiB image's first backup: +3 MB of the agent's peak, growing with the corpus).
  // 16 bits a key: ~0.1% false positives against 1% for 10, each a block read and decode.
  locator_table.filter_policy.reset(rocksdb::NewBloomFilterPolicy(16));
  locator_table.whole_key_filtering = true;
  locator_table.block_cache = rocksdb::NewLRUCache(options.locator_block_cache_bytes);
  locator_options.table_factory.reset(rocksdb::NewBlockBasedTableFactory(locator_table));
  rocksdb::ColumnFamilyOptions pack_ends_options;
  pack_ends_options.write_buffer_size = 1 << 20;  // one small entry per pack
  const std::vector<rocksdb::ColumnFamilyDescriptor> families = {
      {rocksdb::kDefaultColumnFamilyName, locator_options},
      {kPackEndsColumnFamily, pack_ends_options}};
  std::vector<rocksdb::ColumnFamilyHandle*> handles;
  rocksdb::DB* db = nullptr;
  const std::string locator_dir = dir + "/" + kLocatorDirName;
  if (options.read_only) {
    WHORL_RETURN_IF_ERROR(
        FromRocks(rocksdb::DB::OpenForReadOnly(db_options, locator_dir, families, &handles, &db),
                  "open " + dir));
  } else {
    WHORL_RETURN_IF_ERROR(FromRocks(
        rocksdb::DB::Open(db_options, locator_dir, families, &handles, &db), "open " + dir));
    RemoveEarlierEmptyWals(db);
  }
  // The default family's handle is owned by the DB; only ours needs destroying.
  db->DestroyColumnFamilyHandle(handles[0]).PermitUncheckedError();
  auto store =
      std::make_unique<ChunkStoreImpl>(dir, options, std::unique_ptr<rocksdb::DB>(db), handles[1]);
  WHORL_RETURN_IF_ERROR(store->Recover());
  return std::unique_ptr<ChunkStore>(std::move(store));
}

}  // namespace whorl::chunkstore
