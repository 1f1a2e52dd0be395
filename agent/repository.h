// Repository: what the backup, restore and check code needs from a store. Two implementations:
// the embedded one (chunk-store and metadata libraries in-process under one directory) and,
// with the cluster, a remote one (gRPC clients routed by the cluster map). Both run the same
// agent code.
//
// Thread-safety: implementations are safe for concurrent use.
#ifndef WHORL_AGENT_REPOSITORY_H_
#define WHORL_AGENT_REPOSITORY_H_

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/functional/function_ref.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "agent/repo_config.h"
#include "common/bundle.h"
#include "common/fingerprint.h"
#include "metadata-service/metadata_store.h"

namespace whorl::agent {

// A chunk ready to upload: fingerprint of the plain bytes, and the encoded bytes. Or, with
// `members` set, a bundle of chunks (common/bundle.h): `data` encodes its plain bytes (member
// table, then the members' bytes: `plain_size` in all) and `fingerprint` is unused.
struct EncodedChunk {
  Fingerprint fingerprint;
  Codec codec = Codec::kNone;
  uint64_t plain_size = 0;
  std::string data;
  std::vector<BundleMember> members;
};

// A pack file that cannot serve the chunks it should hold (missing, empty, bad header, shorter
// than its indexed records), found without reading chunk data.
struct PackDamage {
  std::string pack;     // "pack 00000003"; for a cluster "chunk-store node ID at ADDR: pack ..."
  std::string problem;  // what is wrong, naming the file
  std::vector<Fingerprint> lost;  // the chunks it held that cannot be read
};

struct RepoStats {
  uint64_t snapshots = 0;
  uint64_t logical_bytes = 0;  // file bytes referenced, summed over snapshots
  uint64_t stored_bytes = 0;   // bytes the chunks take in packs
  uint64_t unique_chunks = 0;
};

class Repository {
 public:
  virtual ~Repository() = default;

  virtual const RepoConfig& config() const = 0;

  // For each fingerprint, true if the repository lacks it. A `false` is a promise that the
  // chunk is durable.
  virtual absl::StatusOr<std::vector<bool>> FindMissing(const std::vector<Fingerprint>& fps) = 0;

  // Stores chunks; on OK all are durable and indexed. All or nothing on a malformed batch.
  // Bundles only if AcceptsBundles().
  virtual absl::Status PutChunks(std::vector<EncodedChunk> chunks) = 0;
  // Whether PutChunks takes bundles (the repository's format allows them and its stores read
  // them).
  virtual bool AcceptsBundles() const { return false; }
  // Chunks with the same group may share a bundle (a cluster: the chunk-store node that owns
  // them under the current map).
  virtual size_t BundleGroup(const Fingerprint& fp) const {
    (void)fp;
    return 0;
  }

  // Plain bytes of a chunk, with SHA-256 verified: DATA_LOSS if they do not hash to `fp`,
  // NOT_FOUND if absent.
  virtual absl::StatusOr<std::string> GetChunk(const Fingerprint& fp) = 0;
  // GetChunk's bytes lent to `use` for the length of the call instead of copied out (a local
  // repository lends a slice of the bundle it decoded). Returns GetChunk's errors (`use` is
  // then not called) or what `use` returns. By default through GetChunk, so a wrapper that
  // overrides GetChunk (retries, injected faults) is used by both; ForwardingRepository does
  // not forward it for that reason.
  virtual absl::Status ReadChunk(const Fingerprint& fp,
                                 absl::FunctionRef<absl::Status(std::string_view)> use) {
    absl::StatusOr<std::string> data = GetChunk(fp);
    if (!data.ok()) return data.status();
    return use(*data);
  }

  // A hint that these chunks will be read soon (in any order): a remote repository fetches
  // them in parallel batches. Errors are not reported here but by GetChunk.
  virtual void Prefetch(const std::vector<Fingerprint>& fps) { (void)fps; }
  // Drops what Prefetch announced and what it read ahead: the next GetChunk of each chunk reads
  // the store (restore calls it when done, check before it reads).
  virtual void ForgetPrefetched() {}
  // True when each read waits for a round trip to another machine (worth announcing reads in
  // bulk with Prefetch); false for a local repository.
  virtual bool ReadsCostARoundTrip() const { return false; }

  // Records a snapshot; FAILED_PRECONDITION if its root is not stored. Returns its id.
  virtual absl::StatusOr<Fingerprint> CommitSnapshot(const v1::Snapshot& snapshot) = 0;

  // All snapshots, oldest first.
  virtual absl::StatusOr<std::vector<metadata::SnapshotRecord>> ListSnapshots() = 0;

  // Every stored chunk's fingerprint (for check).
  virtual absl::StatusOr<std::vector<Fingerprint>> ListChunks() = 0;

  // Every damaged pack of the chunk store(s), with the chunks lost with it (for check; cheap:
  // no chunk data is read). Empty if all packs are sound.
  virtual absl::StatusOr<std::vector<PackDamage>> CheckPacks() = 0;

  virtual absl::StatusOr<RepoStats> Stats() = 0;

  // Forgets chunks that cannot be read (`whorl repair`): first the chunk store's entries, then
  // the index's, so that FindMissing reports them missing and the next backup that meets them
  // stores them again (a crash between the two leaves them unlocated but indexed, which check
  // reports and a second repair finishes). Returns those it kept because they read back whole
  // (a cluster's chunk-store nodes read each one again first; an embedded repository forgets
  // what it is told). UNIMPLEMENTED where not supported.
  virtual absl::StatusOr<std::vector<Fingerprint>> ForgetChunks(
      const std::vector<Fingerprint>& fps) {
    (void)fps;
    return absl::UnimplementedError("this repository cannot forget chunks");
  }
  // How many repairs forgot chunks (metadata_format.md, `k:repair`); 0 where there are none.
  virtual absl::StatusOr<uint64_t> RepairGeneration() { return uint64_t{0}; }
};

// Passes every call to another repository. A wrapper that changes some calls (check's retrying
// reads, tests' injected faults) derives from it and overrides only those.
class ForwardingRepository : public Repository {
 public:
  explicit ForwardingRepository(Repository* inner) : inner_(inner) {}

  const RepoConfig& config() const override { return inner_->config(); }
  absl::StatusOr<std::vector<bool>> FindMissing(const std::vector<Fingerprint>& fps) override {
    return inner_->FindMissing(fps);
  }
  absl::Status PutChunks(std::vector<EncodedChunk> chunks) override {
    return inner_->PutChunks(std::move(chunks));
  }
  absl::StatusOr<std::string> GetChunk(const Fingerprint& fp) override {
    return inner_->GetChunk(fp);
  }
  void Prefetch(const std::vector<Fingerprint>& fps) override { inner_->Prefetch(fps); }
  void ForgetPrefetched() override { inner_->ForgetPrefetched(); }
  bool ReadsCostARoundTrip() const override { return inner_->ReadsCostARoundTrip(); }
  bool AcceptsBundles() const override { return inner_->AcceptsBundles(); }
  size_t BundleGroup(const Fingerprint& fp) const override { return inner_->BundleGroup(fp); }
  absl::StatusOr<Fingerprint> CommitSnapshot(const v1::Snapshot& snapshot) override {
    return inner_->CommitSnapshot(snapshot);
  }
  absl::StatusOr<std::vector<metadata::SnapshotRecord>> ListSnapshots() override {
    return inner_->ListSnapshots();
  }
  absl::StatusOr<std::vector<Fingerprint>> ListChunks() override { return inner_->ListChunks(); }
  absl::StatusOr<std::vector<PackDamage>> CheckPacks() override { return inner_->CheckPacks(); }
  absl::StatusOr<RepoStats> Stats() override { return inner_->Stats(); }
  absl::StatusOr<std::vector<Fingerprint>> ForgetChunks(
      const std::vector<Fingerprint>& fps) override {
    return inner_->ForgetChunks(fps);
  }
  absl::StatusOr<uint64_t> RepairGeneration() override { return inner_->RepairGeneration(); }

 protected:
  Repository* inner() const { return inner_; }

 private:
  Repository* inner_;
};

// The members of `bundle` as chunks of their own, each encoded per `spec` (for a bundle that
// cannot be stored whole). DATA_LOSS if its bytes do not decode or its table is not `members`.
absl::StatusOr<std::vector<EncodedChunk>> SplitBundle(const EncodedChunk& bundle,
                                                      const CompressionSpec& spec);

// A tree as read back: the directory whole, and how it is stored (a tree delta, repository
// version 5, is applied to its base).
struct LoadedTree {
  v1::Tree tree;        // the directory's entries, sorted by name
  std::string id;       // its fingerprint (32 bytes), as a directory node names it
  std::string base_id;  // a delta's base's fingerprint (32 bytes); "" for a whole tree
  std::shared_ptr<const v1::Tree> base;  // a delta's base; null for a whole tree
};

// Loads and validates the tree with fingerprint `fp_bytes` (32 bytes) from `repo`, and its base
// if it is a delta (DecodeTree, ApplyTreeDelta). `base_named`, if given, gets a delta's base's
// fingerprint as soon as the delta is read, even if the base then cannot be.
absl::StatusOr<LoadedTree> LoadStoredTree(Repository* repo, std::string_view fp_bytes,
                                          std::string* base_named = nullptr);

// For a repository whose reads cost a round trip: loads the trees below `root` breadth first,
// announcing each level's subtrees together (Prefetch), so that a walk of ~9k directories costs
// a round of reads per level instead of a round trip per directory. `parse` reads a tree's bytes
// (a tree it refuses is left out: the walk meets it again and reports it); `follow(path)` says
// whether to load the directory at `path` ("/a/b") and below; `keep` takes each tree loaded,
// as read and as parsed (a delta applied to its base); `keep_base` each delta's base, as read
// (loaded with the level's other bases, together; a delta whose base is missing, refused, a
// delta too or past `max_bytes` is left out, as a refused tree).
// Stops once `max_bytes` of trees are loaded, so memory stays bounded whatever the snapshot's
// size: the walk loads the rest as it reaches them.
void PreloadTrees(
    Repository* repo, const v1::Tree& root, uint64_t max_bytes,
    const std::function<absl::StatusOr<v1::Tree>(std::string_view bytes)>& parse,
    const std::function<bool(const std::string& path)>& follow,
    const std::function<void(const Fingerprint& fp, std::string bytes, LoadedTree tree)>& keep,
    const std::function<void(const Fingerprint& fp, std::string bytes)>& keep_base);

// Visits every node below the tree `root` depth-first, entries in name order, a directory
// before its contents. `fn` gets the node's absolute path ("/home/x") and the node, and returns
// whether to descend into a directory. A tree that cannot be loaded is reported to `on_error`
// (path of its directory, status) and skipped; the walk goes on. `on_base`, if given, gets the
// path of each directory whose tree is a delta and the delta's base.
void WalkTree(
    Repository* repo, std::string_view root,
    const std::function<bool(const std::string& path, const v1::Node& node)>& fn,
    const std::function<void(const std::string& path, const absl::Status&)>& on_error,
    const std::function<void(const std::string& path, const Fingerprint& base)>& on_base = {});

// Creates an embedded repository in `path` (which must not hold one; it may exist empty).
// FAILED_PRECONDITION "repository already exists" if REPO/config exists.
absl::Status InitEmbeddedRepository(const std::string& path, const RepoConfig& config);

// Raises the embedded repository in `path` to kRepoFormatVersion (`whorl upgrade`), holding its
// lock, so that backups may write what the newer versions add; returns the version it had. Only
// the config changes: this build reads every older version's packs, trees and index as they are.
// The repository is then refused by the builds before that version, which could not read what
// backups now write.
absl::StatusOr<int> UpgradeEmbeddedRepository(const std::string& path);

// What a command does to a repository it opens.
enum class RepoAccess {
  kReadWrite,  // backup: writes chunks, the index and snapshots
  kReadOnly,   // snapshots, ls, restore, check, stats: read only
};

// Where a read of a chunk may come from (OpenEmbeddedRepository).
enum class ChunkReads {
  kAnyCopy,         // backup, restore, ls: any decoded copy of its bytes
  kThroughLocator,  // check, repair, debug chunks: the record its locator entry names
};

// Opens the embedded repository in `path`. FAILED_PRECONDITION "PATH is not a whorl
// repository" if there is no config; the config's own errors otherwise. Holds the repository's
// lock (flock on REPO/lock) until destroyed: a second process opening the same repository waits
// for the first to finish, so two backups run one after the other, never interleaved. A kReadOnly
// open of a repository whose filesystem takes no writes (full, or mounted read-only) opens the
// stores read-only, so such a repository can still be listed, checked and restored from.
//
// `reads`: kAnyCopy lets a read of a chunk that a recently decoded bundle holds be served from
// it (chunkstore::ChunkStoreOptions::serve_cached_members); kThroughLocator sends every read
// through the chunk's own locator entry, as check, repair and `debug chunks` need.
absl::StatusOr<std::unique_ptr<Repository>> OpenEmbeddedRepository(
    const std::string& path, RepoAccess access = RepoAccess::kReadWrite,
    ChunkReads reads = ChunkReads::kAnyCopy);

}  // namespace whorl::agent

#endif  // WHORL_AGENT_REPOSITORY_H_
