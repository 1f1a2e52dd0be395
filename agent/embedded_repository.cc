// The embedded repository: REPO/config, REPO/lock, REPO/chunks (chunk store), REPO/meta
// (metadata shard). Layout in repository_format.md.
#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <thread>

#include "absl/strings/match.h"
#include "absl/strings/str_format.h"
#include "agent/read_ahead.h"
#include "agent/repository.h"
#include "chunk-store/chunk_store.h"
#include "common/file_util.h"
#include "common/kill_point.h"
#include "common/status_macros.h"

namespace whorl::agent {
namespace {

constexpr size_t kMaxConfigBytes = 1 << 20;

// Reads announced with Prefetch (the parent snapshot's trees during a backup, a directory's
// chunks during a restore) go ahead on kReadAheadThreads threads: several pack reads in flight
// on a cold cache, and decompression and SHA-256 checks beside the caller's work.
constexpr size_t kReadAheadThreads = 3;
constexpr uint64_t kReadAheadBytes = 32 << 20;

// Thread-safe: both stores are.
class EmbeddedRepository : public Repository {
 public:
  EmbeddedRepository(RepoConfig config, int lock_fd, std::unique_ptr<chunkstore::ChunkStore> chunks,
                     std::unique_ptr<metadata::MetadataStore> meta)
      : config_(std::move(config)),
        lock_fd_(lock_fd),
        chunks_(std::move(chunks)),
        meta_(std::move(meta)),
        read_ahead_(std::make_unique<ReadAhead>(
            [this](const std::vector<Fingerprint>& fps, const ReadAhead::Deliver& deliver) {
              FetchBatch(fps, deliver);
            },
            ReadAhead::Options{.threads = kReadAheadThreads,
                               .batch = 16,
                               .max_bytes = kReadAheadBytes,
                               .wait_for_planned = false})) {}
  ~EmbeddedRepository() override {
    read_ahead_.reset();  // its threads read the stores
    // After a backup that committed nothing (it failed): the packs' ends move past what it
    // stored, so the next open need not scan those records again. A no-op after a commit, and
    // refused (ignored) when opened read-only.
    chunks_->Sync().IgnoreError();
    meta_.reset();
    chunks_.reset();
    ::close(lock_fd_);  // releases the flock
  }

  const RepoConfig& config() const override { return config_; }

  absl::StatusOr<std::vector<bool>> FindMissing(const std::vector<Fingerprint>& fps) override {
    return meta_->FindMissing(fps);
  }

  absl::Status PutChunks(std::vector<EncodedChunk> chunks) override {
    std::vector<chunkstore::ChunkPut> puts;
    puts.reserve(chunks.size());
    std::vector<std::pair<Fingerprint, metadata::IndexEntry>> entries;
    entries.reserve(chunks.size());
    for (EncodedChunk& c : chunks) {
      if (c.members.empty()) {
        entries.push_back(
            {c.fingerprint, metadata::IndexEntry{static_cast<uint32_t>(c.data.size()),
                                                 static_cast<uint32_t>(c.plain_size), 0, ""}});
      } else {
        if (!config_.bundles()) {
          return absl::FailedPreconditionError("a version 1 repository takes no bundles");
        }
        // Each member counts its share of the bundle's stored bytes.
        const std::vector<uint32_t> shares = ApportionBytes(c.data.size(), c.members);
        for (size_t i = 0; i < c.members.size(); ++i) {
          entries.push_back({c.members[i].fingerprint,
                             metadata::IndexEntry{shares[i], c.members[i].size, 0, ""}});
        }
      }
      puts.push_back(chunkstore::ChunkPut{c.fingerprint, c.codec, c.plain_size, std::move(c.data),
                                          std::move(c.members)});
    }
    // Order matters (design.md invariant 1): bytes durable first, then the index says so.
    WHORL_RETURN_IF_ERROR(chunks_->PutBatch(puts));
    WHORL_KILL_POINT("embedded.register.before");
    return meta_->Register(entries);
  }

  absl::StatusOr<std::string> GetChunk(const Fingerprint& fp) override {
    if (std::optional<std::string> ahead = read_ahead_->Take(fp); ahead.has_value()) {
      return *std::move(ahead);  // checked by FetchBatch
    }
    return ReadChecked(fp);
  }

  absl::Status ReadChunk(const Fingerprint& fp,
                         absl::FunctionRef<absl::Status(std::string_view)> use) override {
    if (std::optional<std::string> ahead = read_ahead_->Take(fp); ahead.has_value()) {
      return use(*ahead);  // checked by FetchBatch
    }
    return chunks_->Read(fp, [&](std::string_view plain) {
      if (ChunkSha256(plain) != fp) return NotItsFingerprint(fp);
      return use(plain);
    });
  }

  void Prefetch(const std::vector<Fingerprint>& fps) override { read_ahead_->Announce(fps); }
  void ForgetPrefetched() override {
    read_ahead_->Forget();
    chunks_->ForgetDecoded();
  }
  bool AcceptsBundles() const override { return config_.bundles(); }

  absl::StatusOr<Fingerprint> CommitSnapshot(const v1::Snapshot& snapshot) override {
    // The locator entries of every chunk the snapshot names are durable before it is.
    WHORL_RETURN_IF_ERROR(chunks_->Sync());
    return meta_->CommitSnapshot(snapshot);
  }

  absl::StatusOr<std::vector<metadata::SnapshotRecord>> ListSnapshots() override {
    return meta_->ListSnapshots();
  }

  // In pack order (ChunkStore::ListInPackOrder), for `check --read-data`.
  absl::StatusOr<std::vector<Fingerprint>> ListChunks() override {
    return chunks_->ListInPackOrder();
  }

  absl::StatusOr<std::vector<PackDamage>> CheckPacks() override {
    WHORL_ASSIGN_OR_RETURN(std::vector<chunkstore::PackProblem> problems, chunks_->CheckPacks());
    std::vector<PackDamage> out;
    for (chunkstore::PackProblem& p : problems) {
      out.push_back(PackDamage{absl::StrFormat("pack %08u", p.pack_id), std::move(p.problem),
                               std::move(p.lost)});
    }
    return out;
  }

  absl::StatusOr<std::vector<Fingerprint>> ForgetChunks(
      const std::vector<Fingerprint>& fps) override {
    if (fps.empty()) return std::vector<Fingerprint>();
    ForgetPrefetched();
    WHORL_RETURN_IF_ERROR(chunks_->Forget(fps));
    WHORL_KILL_POINT("repair.forget.between");
    WHORL_RETURN_IF_ERROR(meta_->Unregister(fps));
    return std::vector<Fingerprint>();
  }
  absl::StatusOr<uint64_t> RepairGeneration() override { return meta_->RepairGeneration(); }

  absl::StatusOr<RepoStats> Stats() override {
    RepoStats stats;
    WHORL_ASSIGN_OR_RETURN(std::vector<metadata::SnapshotRecord> snaps, meta_->ListSnapshots());
    stats.snapshots = snaps.size();
    for (const auto& s : snaps) stats.logical_bytes += s.snapshot.summary().total_bytes_processed();
    WHORL_ASSIGN_OR_RETURN(chunkstore::ChunkStoreStats cs, chunks_->Stats());
    stats.stored_bytes = cs.stored_bytes;
    stats.unique_chunks = cs.chunks;
    return stats;
  }

 private:
  static absl::Status NotItsFingerprint(const Fingerprint& fp) {
    return absl::DataLossError("chunk " + fp.ToHex() + " does not hash to its fingerprint");
  }
  absl::StatusOr<std::string> ReadChecked(const Fingerprint& fp) {
    WHORL_ASSIGN_OR_RETURN(std::string plain, chunks_->Get(fp));
    if (ChunkSha256(plain) != fp) return NotItsFingerprint(fp);
    return plain;
  }

  // Delivers the chunks that read and check clean; the others are read again by GetChunk,
  // which reports their error where it belongs.
  void FetchBatch(const std::vector<Fingerprint>& fps, const ReadAhead::Deliver& deliver) {
    for (size_t i = 0; i < fps.size(); ++i) {
      absl::StatusOr<std::string> plain = ReadChecked(fps[i]);
      if (plain.ok() && !deliver(i, *std::move(plain))) return;
    }
  }

  const RepoConfig config_;
  const int lock_fd_;
  std::unique_ptr<chunkstore::ChunkStore> chunks_;
  std::unique_ptr<metadata::MetadataStore> meta_;
  std::unique_ptr<ReadAhead> read_ahead_;
};

bool Exists(const std::string& path) {
  struct stat st;
  return ::stat(path.c_str(), &st) == 0;
}

struct Stores {
  std::unique_ptr<chunkstore::ChunkStore> chunks;
  std::unique_ptr<metadata::MetadataStore> meta;
};

// Opens the repository's two stores side by side: each open reads and writes a few small files
// (manifest, options, a new WAL) and waits for their fsyncs; together they were half of a cold
// `whorl snapshots`.
absl::StatusOr<Stores> OpenStores(const std::string& path, bool read_only, ChunkReads reads) {
  chunkstore::ChunkStoreOptions options;
  options.serve_cached_members = reads == ChunkReads::kAnyCopy;
  options.verify_puts = false;  // the agent computed each fingerprint from these very bytes
  options.read_only = read_only;
  // Locator entries are synced once, before the snapshot's commit (CommitSnapshot), not with
  // each put: image first backup, five cold rounds alternating, median 3.82 -> 3.66 s.
  options.sync_locator = false;
  metadata::MetadataStoreOptions meta_options;
  meta_options.read_only = read_only;
  // The index's block cache: a backup reads its blocks only for fingerprints already stored
  // (and the Bloom filters' 1% of false positives), a restore not at all.
  meta_options.block_cache_bytes = 4 << 20;
  // metadata_store.h: the chunk store syncs its packs first.
  meta_options.sync_registrations = false;
  absl::StatusOr<std::unique_ptr<metadata::MetadataStore>> meta = absl::UnknownError("not opened");
  std::thread meta_open([&meta, &path, &meta_options] {
    meta = metadata::MetadataStore::Open(path + "/meta", meta_options);
  });
  absl::StatusOr<std::unique_ptr<chunkstore::ChunkStore>> chunks =
      chunkstore::ChunkStore::Open(path + "/chunks", options);
  meta_open.join();
  if (!chunks.ok()) return chunks.status();
  if (!meta.ok()) return meta.status();
  return Stores{*std::move(chunks), *std::move(meta)};
}

// Whether an open failed only because the repository's filesystem takes no writes.
bool CannotWrite(const absl::Status& s) {
  return absl::IsResourceExhausted(s) ||
         absl::StrContains(s.message(), "No space left on device") ||
         absl::StrContains(s.message(), "Read-only file system");
}

}  // namespace

absl::Status InitEmbeddedRepository(const std::string& path, const RepoConfig& config) {
  if (Exists(path + "/config")) {
    return absl::FailedPreconditionError("repository already exists at " + path);
  }
  if (::mkdir(path.c_str(), 0700) != 0 && errno != EEXIST) {
    return ErrnoStatus("mkdir", path, errno);
  }
  struct stat st;
  if (::stat(path.c_str(), &st) != 0 || !S_ISDIR(st.st_mode)) {
    return absl::FailedPreconditionError(path + " is not a directory");
  }
  // The config is written last: a directory without one is not (yet) a repository.
  {
    WHORL_ASSIGN_OR_RETURN(auto chunks, chunkstore::ChunkStore::Open(path + "/chunks", {}));
    WHORL_ASSIGN_OR_RETURN(auto meta, metadata::MetadataStore::Open(path + "/meta"));
  }
  return WriteFileAtomic(path + "/config", config.ToJson());
}

absl::StatusOr<int> UpgradeEmbeddedRepository(const std::string& path) {
  const std::string config_path = path + "/config";
  if (!Exists(config_path)) {
    return absl::FailedPreconditionError(path + " is not a whorl repository (no config)");
  }
  const std::string lock_path = path + "/lock";
  const int fd = ::open(lock_path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600);
  if (fd < 0) return ErrnoStatus("open", lock_path, errno);
  auto upgrade = [&]() -> absl::StatusOr<int> {
    while (::flock(fd, LOCK_EX) != 0) {
      if (errno != EINTR) return ErrnoStatus("flock", lock_path, errno);
    }
    // Read under the lock: no other whorl process has the repository open. One that waits for
    // the lock reads the new config once it has it (a build of this version or later; an older
    // build read the config before locking and would go on with the old version).
    WHORL_ASSIGN_OR_RETURN(std::string text, ReadFile(config_path, kMaxConfigBytes));
    absl::StatusOr<RepoConfig> config = RepoConfig::FromJson(text);
    if (!config.ok()) return Annotate(config.status(), config_path);
    const int was = config->version;
    if (was == kRepoFormatVersion) return was;
    config->version = kRepoFormatVersion;
    WHORL_RETURN_IF_ERROR(WriteFileAtomic(config_path, config->ToJson()));
    return was;
  };
  absl::StatusOr<int> was = upgrade();
  ::close(fd);
  return was;
}

absl::StatusOr<std::unique_ptr<Repository>> OpenEmbeddedRepository(const std::string& path,
                                                                   RepoAccess access,
                                                                   ChunkReads reads) {
  const std::string config_path = path + "/config";
  if (!Exists(config_path)) {
    return absl::FailedPreconditionError(path + " is not a whorl repository (no config)");
  }
  const std::string lock_path = path + "/lock";
  int fd = ::open(lock_path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600);
  if (fd < 0 && errno == EROFS && access == RepoAccess::kReadOnly) {
    // On a read-only filesystem no writer can be at work: lock what there is, if anything.
    fd = ::open(lock_path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0 && errno == ENOENT) fd = ::open(config_path.c_str(), O_RDONLY | O_CLOEXEC);
  }
  if (fd < 0) return ErrnoStatus("open", lock_path, errno);
  while (::flock(fd, LOCK_EX) != 0) {
    if (errno != EINTR) {
      const int err = errno;
      ::close(fd);
      return ErrnoStatus("flock", lock_path, err);
    }
  }
  // The config is read under the lock: a `whorl upgrade` this open waited for has changed it.
  absl::StatusOr<std::string> text = ReadFile(config_path, kMaxConfigBytes);
  absl::StatusOr<RepoConfig> config =
      text.ok() ? RepoConfig::FromJson(*text) : absl::StatusOr<RepoConfig>(text.status());
  if (!config.ok()) {
    ::close(fd);
    return text.ok() ? Annotate(config.status(), config_path) : config.status();
  }
  // Opened for writing even to read: the open recovers what a crash left (the newest pack's tail)
  // and RocksDB checks the whole MANIFEST. A reader falls back to the stores' read-only mode only
  // where that open cannot write (a full disk, a read-only filesystem): then it sees the
  // repository as its last writer left it, and a torn pack tail stays unread.
  absl::StatusOr<Stores> stores = OpenStores(path, /*read_only=*/false, reads);
  if (!stores.ok() && access == RepoAccess::kReadOnly && CannotWrite(stores.status())) {
    stores = OpenStores(path, /*read_only=*/true, reads);
  }
  if (!stores.ok()) {
    ::close(fd);
    return stores.status();
  }
  return std::unique_ptr<Repository>(new EmbeddedRepository(
      *std::move(config), fd, std::move(stores->chunks), std::move(stores->meta)));
}

}  // namespace whorl::agent
