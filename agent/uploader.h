// ChunkUploader: collects chunks (fingerprint + plain bytes) into batches; per batch it asks
// the repository which are missing (one FindMissing), compresses only those (on every core;
// small files' chunks (kSmallFile) that follow each other go together as a bundle, compressed
// as one, when the repository takes bundles, and so do medium files' (kMediumFile), trees
// (kTree) and chunk lists (kChunkList, not compressed), each kind in bundles of its own; large
// files' chunks get the repository's large_compression),
// and stores them (one PutChunks, one group commit, per store of kStoreBytes encoded, or
// kRemoteStoreBytes for a cluster: a nightly run's few new chunks per batch are carried over
// several batches). Chunks already known in this session are not asked again.
//
// Background threads make a pipeline while the callers go on reading, chunking and hashing:
// the encoder thread asks the index about batch k+1 and sorts its missing chunks into units (a
// chunk alone, or a closed bundle); compressor threads (one per core, up to 8) compress the units,
// each taking the next one not taken; the storer stores what is compressed, in the units' order (a
// tree is never stored before a chunk added before it). At most kMaxQueued full batches wait for
// the encoder, kMaxUnitBytes plain bytes of units for the compressors and kMaxStores stores are
// handed to the storer, so memory stays bounded (about (kMaxQueued + 2) x kBatchBytes +
// kMaxUnitBytes + kBundleBytes + (kMaxStores + 1) stores, and kBundleBytes per open bundle)
// whatever the backup's size.
//
// With WHORL_ACK_LOG set, the fingerprints of every batch stored are appended to that file once
// PutChunks returned OK (agent/ack_log.h; the crash harness's ledger of acknowledged chunks).
//
// Thread-safe: several threads may call Add at once (Flush once they are done). An error of a
// batch is returned by a later Add or by Flush; after an error nothing more is uploaded.
#ifndef WHORL_AGENT_UPLOADER_H_
#define WHORL_AGENT_UPLOADER_H_

#include <atomic>
#include <deque>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <thread>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_set.h"
#include "absl/synchronization/mutex.h"
#include "agent/ack_log.h"
#include "agent/repository.h"

namespace whorl::agent {

class ChunkUploader {
 public:
  // Plain bytes per FindMissing batch. 1 MiB (2 MiB before): the tree's first backup peaks
  // ~5 MiB lower, embedded and on a local cluster, in the same time (three cold runs each);
  // 512 KiB once the compressors ran apart from the encoder thread (below): ~2 MiB lower again.
  static constexpr size_t kBatchBytes = 512 << 10;
  static constexpr size_t kBatchChunks = 4096;
  // Encoded bytes stored with one PutChunks (one group commit), at least.
  static constexpr size_t kStoreBytes = 2 << 20;
  // A store holding bundles, for a repository on this machine (no round trip per store): the
  // encoded bundles waiting behind a busy storer were 8.7 MB of the tree's first-backup peak
  // (heaptrack) with 2 MiB stores; 1 MiB: 3 MiB lower in the same time. Big files' chunks alone
  // keep kStoreBytes (the 1 GiB image took 8% longer with 1 MiB stores, twice the fsyncs), and
  // so does a cluster (its image backup 3.3 -> 4.1 s: twice the RPCs and group commits).
  static constexpr size_t kLocalStoreBytes = 1 << 20;
  // Every store to a cluster, of bundles or of chunks alone. Each PutChunks of a store is split
  // over the chunk stores, each registers its part with every metadata shard (a synced write
  // there) before it answers, and the agent stores one at a time: with 2 MiB stores the 1 GiB
  // image was ~460 PutChunks and ~1400 Registers of one or two entries each. 8 MiB, cold, three
  // runs each: the image 6.25-6.64 -> 5.0-5.3 s, the source tree 5.6 -> 4.4-5.0 s; the agent's
  // peak +20-25 MiB (a store carried while one is stored; their bytes are lent to the requests,
  // not copied).
  static constexpr size_t kRemoteStoreBytes = 8 << 20;
  // Full batches that may wait for the encoder thread. 3 was needed while the encoder thread
  // compressed (a batch of costly chunks stalled the reading threads: the 1 GiB image 2.44-2.61
  // -> 2.06-2.19 s with 3); now it only asks and sorts, and 1 is as fast on the image and the
  // tree, with 2-4 MiB less at the peak.
  static constexpr size_t kMaxQueued = 1;
  // Encoded stores (kStoreBytes each) handed to the storer thread, the one it stores included.
  // 1: the next store is carried until the storer is done with the last one (2 before, one
  // stored and one waiting: the tree's first backup peaked 3-5 MiB higher, heaptrack showing
  // 12.5 MB of encoded chunks at the peak; the image and a cluster as fast either way). Halving
  // kStoreBytes instead cost the cluster's image backup 3.3 -> 4.1 s (twice the group commits).
  static constexpr size_t kMaxStores = 1;
  // Plain bytes of units the encoder thread may queue for the compressors (one more unit may go
  // past it, so two full bundles are compressed at once; a strict 4 MiB let one at a time and
  // lost the gain). Units used to be compressed batch by batch, on the encoder thread and a
  // helper started per batch; but a first backup's bundles fill up over two batches, so most
  // batches closed one bundle, compressed by the encoder thread alone while the other core had
  // nothing to compress (the tree's first backup: the encoder thread 1.8 s of CPU in 2.8 s of
  // wall time, its short-lived helpers 0.07 s). With the compressors: 2.50-2.67 -> 2.31-2.45 s
  // (cold, five runs each, side by side).
  static constexpr size_t kMaxUnitBytes = 4 << 20;
  // Fingerprints remembered between batches, in one table of 32 Ki slots (~1 MiB, allocated
  // whole: a node per fingerprint, as std::unordered_set had, fragmented the heap between the
  // pipeline's big buffers, and the peak grew with the backup). Forgetting costs one more
  // question to the index.
  static constexpr size_t kMaxKnown = 1 << 14;
  // Bundles: new chunks smaller than kBundleMemberBytes (every chunk, with the default 128 KiB
  // maximum) go into a bundle that is closed once it holds kBundleBytes of plain bytes (or
  // kMaxBundleMembers chunks). A bundle stays open from batch to batch (the encoder thread holds
  // it) and is closed at the end of the backup; file chunks and trees go in bundles of their
  // own. Measured on the benchmark's source tree (zstd level 3, 9 backups, side by side): the
  // first backup's packs 138.1 -> 133.1 MB and the repository after 8 nights 160.0 -> 154.0 MB
  // (-3.8%; 1.6 MB of it from bundling trees) against 512 KiB bundles closed at the end of each
  // batch and trees alone; `zstd -b3 -B` on a tar of the same files makes 139.6, 136.8 and
  // 133.3 MB with 512 KiB, 1 MiB and 2 MiB blocks. The first backup's time and peak RSS are the
  // same (bigger batches would have cost +28 MiB). A restore reads a bundle's members together,
  // and the chunk store keeps the bundles it decoded (chunk-store/chunk_store.cc).
  static constexpr size_t kBundleMemberBytes = 256 << 10;
  static constexpr size_t kBundleBytes = 2 << 20;
  // A bundle is also closed before a chunk added once the backup has walked more than this many
  // bytes of files (Walked) since its first member: its members stay near each other in the
  // snapshot's order, so a restore decodes it once, not once per member. A night's few new
  // chunks, scattered over the whole tree, would otherwise share a few bundles that a restore
  // of the source tree decoded ~100 times each (2.4 -> 4.4 s).
  static constexpr uint64_t kBundleSpanBytes = 64 << 20;
  // A bundle of file chunks the walk's span closed with less than kSmallBundleBytes (a night's
  // new chunks, scattered; trees gain nothing from it) is compressed with zstd at least at
  // kSmallBundleZstdLevel: such bundles are few, so the stronger level costs little CPU, and they
  // are what every later night adds to the repository. A first backup's bundles fill up before the
  // span closes them, so it never pays the strong level's CPU or its context's memory
  // (common/codec.cc frees that after each use).
  static constexpr size_t kSmallBundleBytes = 1 << 20;
  static constexpr int kSmallBundleZstdLevel = 9;
  // The compression of a bundle of `plain_size` bytes, with the repository's `spec`.
  static CompressionSpec BundleCompression(const CompressionSpec& spec, size_t plain_size);
  // Plain bytes of trees per tree batch (~3 MiB of trees for the source tree's ~9k directories).
  static constexpr size_t kTreeBatchBytes = 1 << 20;

  explicit ChunkUploader(Repository* repo)
      : repo_(repo),
        ack_log_(AckLog::FromEnvironment()),
        bundle_store_bytes_(repo->ReadsCostARoundTrip() ? kRemoteStoreBytes : kLocalStoreBytes),
        chunk_store_bytes_(repo->ReadsCostARoundTrip() ? kRemoteStoreBytes : kStoreBytes) {}
  ~ChunkUploader();
  ChunkUploader(const ChunkUploader&) = delete;
  ChunkUploader& operator=(const ChunkUploader&) = delete;

  // What a chunk is part of, which decides how it is encoded.
  enum Kind {
    kSmallFile,   // may share a bundle with its neighbours; the repository's `compression`
    kMediumFile,  // as kSmallFile, in bundles of its own kind (see Process)
    kLargeFile,   // alone, with the repository's `large_compression`
    kTree,        // a directory's tree: may share a bundle with other trees; `compression`
    kOther,       // alone, with `compression`
    kChunkList,   // a big file's chunk list: may share a bundle with other lists; not compressed
  };
  // Queues a chunk; hands a full batch to the background threads (waiting while kMaxQueued
  // batches already wait). Returns the error of an earlier batch, if any. Trees go through
  // AddTree.
  absl::Status Add(const Fingerprint& fp, std::string_view plain, Kind kind = kOther);
  // Queues a directory's tree. Trees wait in a batch of their own (up to kTreeBatchBytes), and
  // are bundled with each other only, so they are stored next to each other instead of one
  // between every few file chunks: the next backup reads back every tree of its parent
  // snapshot, and ~9k trees in a few bundles cost a few reads from a cold disk and a few
  // decodes. A tree batch is queued after every chunk added before it, and the open bundles of
  // file chunks are closed before its first tree, so a directory's tree is still stored after
  // its files' chunks. Compressed together, the source tree's 3.0 MB of trees take 1.6 MB
  // instead of 2.4 MB one by one (and a night's 1.2 MB of new trees 0.6 MB instead of 0.8 MB).
  absl::Status AddTree(const Fingerprint& fp, std::string_view plain, Kind kind = kTree);
  // The backup went past `bytes` more bytes of files: read (as they are read) or unchanged
  // (kBundleSpanBytes).
  void Walked(uint64_t bytes) { walked_.fetch_add(bytes, std::memory_order_relaxed); }
  // Uploads everything queued and waits. On OK every chunk added so far is durable in the
  // repository.
  absl::Status Flush();

  // Encoded bytes this uploader stored (chunks the repository lacked). Exact after Flush.
  uint64_t data_added() const { return data_added_.load(); }

 private:
  struct Pending {
    Fingerprint fp;
    std::string plain;
    Kind kind = kOther;
    uint64_t walked = 0;  // walked_ when it was added
  };
  using Batch = std::vector<Pending>;

  // Queues `plain` into `batch` unless known; true if it was queued.
  bool Queue(Batch* batch, const Fingerprint& fp, std::string_view plain, Kind kind)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(add_mu_);
  absl::Status Submit(Batch* batch) ABSL_EXCLUSIVE_LOCKS_REQUIRED(add_mu_);
  absl::Status SubmitTrees() ABSL_EXCLUSIVE_LOCKS_REQUIRED(add_mu_);  // data first, then trees
  // A chunk alone or a closed bundle, to compress.
  struct Unit {
    Batch items;          // of one kind
    bool strong = false;  // a bundle the walk's span closed (BundleCompression)
    size_t plain_bytes = 0;
    bool done = false;  // `out` is encoded
    EncodedChunk out;
  };
  absl::Status Process(Batch batch, bool close_all);
  // Queues carry_ for the storer (waiting while it has kMaxStores).
  absl::Status HandOver() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Moves the units at the front that are encoded into carry_, handing it over once it holds
  // kStoreBytes; on one thread at a time (draining_).
  void Drain() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void Encode(Unit* unit) const;
  void RunEncoder();
  void RunCompressor();
  void RunStorer();

  Repository* repo_;
  const std::unique_ptr<const AckLog> ack_log_;  // null unless WHORL_ACK_LOG is set
  const size_t bundle_store_bytes_;              // of a store holding a bundle
  const size_t chunk_store_bytes_;               // of a store of chunks alone
  absl::Mutex add_mu_;                           // taken before mu_, never after
  Batch pending_ ABSL_GUARDED_BY(add_mu_);
  size_t pending_bytes_ ABSL_GUARDED_BY(add_mu_) = 0;
  Batch trees_ ABSL_GUARDED_BY(add_mu_);
  size_t tree_bytes_ ABSL_GUARDED_BY(add_mu_) = 0;
  // Present or queued.
  absl::flat_hash_set<Fingerprint, FingerprintHash> known_ ABSL_GUARDED_BY(add_mu_);
  std::atomic<uint64_t> data_added_{0};
  std::atomic<uint64_t> walked_{0};

  absl::Mutex mu_;
  std::deque<Batch> queue_ ABSL_GUARDED_BY(mu_);                        // to ask and compress
  std::deque<std::vector<EncodedChunk>> encoded_ ABSL_GUARDED_BY(mu_);  // to store
  int busy_ ABSL_GUARDED_BY(mu_) = 0;          // batches a thread is working on
  bool storing_ ABSL_GUARDED_BY(mu_) = false;  // the storer is storing
  bool flushing_ ABSL_GUARDED_BY(mu_) = false;
  bool holding_ ABSL_GUARDED_BY(mu_) = false;  // open_ holds chunks
  // Units in the order they are stored, until they are encoded and moved into carry_.
  std::deque<std::unique_ptr<Unit>> units_ ABSL_GUARDED_BY(mu_);
  size_t next_unit_ ABSL_GUARDED_BY(mu_) = 0;   // index in units_ of the first not taken
  size_t unit_bytes_ ABSL_GUARDED_BY(mu_) = 0;  // plain bytes in units_
  bool draining_ ABSL_GUARDED_BY(mu_) = false;
  // Bundles not closed yet, by (kind, BundleGroup), and their members' fingerprints (the
  // encoder thread's own).
  struct OpenBundle {
    Batch items;
    size_t bytes = 0;
    uint64_t walked = 0;  // of its first member
  };
  std::map<std::pair<Kind, size_t>, OpenBundle> open_;
  absl::flat_hash_set<Fingerprint, FingerprintHash> open_fps_;
  // Encoded chunks of several batches, stored together.
  std::vector<EncodedChunk> carry_ ABSL_GUARDED_BY(mu_);
  uint64_t carry_bytes_ ABSL_GUARDED_BY(mu_) = 0;
  bool carry_bundles_ ABSL_GUARDED_BY(mu_) = false;  // carry_ holds a bundle
  bool stop_ ABSL_GUARDED_BY(mu_) = false;
  absl::Status error_ ABSL_GUARDED_BY(mu_);
  std::thread encoder_, storer_;  // started with the first batch
  std::vector<std::thread> compressors_;
  // The storer trims malloc's arenas once the stores since the last trim earn kTrimCredit: a
  // store holding bundles kTrimCreditPerBundleStore, a store of chunks alone 1 (RunStorer).
  static constexpr uint64_t kTrimCredit = 128;
  static constexpr uint64_t kTrimCreditPerBundleStore = 4;
  uint64_t trim_credit_ = 0;  // the storer thread's own
};

}  // namespace whorl::agent

#endif  // WHORL_AGENT_UPLOADER_H_
