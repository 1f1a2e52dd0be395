// ChunkUploader: collects chunks (fingerprint + plain bytes) into batches; per batch it asks
// the repository which are missing (one FindMissing), compresses only those (on every core),
// and stores them (one PutChunks: one group commit). Chunks already known in this session are
// not asked again.
//
// Batches are processed on a background thread while the caller goes on reading, chunking and
// hashing the next one: the stages overlap, and at most kMaxQueued full batches wait, so memory
// stays bounded (about (kMaxQueued + 2) x kBatchBytes of plain data) whatever the backup's size.
//
// Thread-compatible: one thread calls Add/Flush. An error of a batch is returned by a later Add
// or by Flush; after an error nothing more is uploaded.
#ifndef WHORL_AGENT_UPLOADER_H_
#define WHORL_AGENT_UPLOADER_H_

#include <atomic>
#include <deque>
#include <string>
#include <string_view>
#include <thread>
#include <unordered_set>
#include <utility>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "agent/repository.h"

namespace whorl::agent {

class ChunkUploader {
 public:
  static constexpr size_t kBatchBytes = 4 << 20;
  static constexpr size_t kBatchChunks = 4096;
  // Full batches that may wait for the background thread.
  static constexpr size_t kMaxQueued = 2;
  // Fingerprints remembered between batches (~20 MB at most).
  static constexpr size_t kMaxKnown = 1 << 18;

  explicit ChunkUploader(Repository* repo) : repo_(repo) {}
  ~ChunkUploader();
  ChunkUploader(const ChunkUploader&) = delete;
  ChunkUploader& operator=(const ChunkUploader&) = delete;

  // Queues a chunk; hands a full batch to the background thread (waiting while kMaxQueued
  // batches already wait). Returns the error of an earlier batch, if any.
  absl::Status Add(const Fingerprint& fp, std::string_view plain);
  // Uploads everything queued and waits. On OK every chunk added so far is durable in the
  // repository.
  absl::Status Flush();

  // Encoded bytes this uploader stored (chunks the repository lacked). Exact after Flush.
  uint64_t data_added() const { return data_added_.load(); }

 private:
  using Batch = std::vector<std::pair<Fingerprint, std::string>>;

  absl::Status Submit();
  absl::Status Process(Batch batch);
  void Run();

  Repository* repo_;
  Batch pending_;
  size_t pending_bytes_ = 0;
  std::unordered_set<Fingerprint, FingerprintHash> known_;  // present or queued
  std::atomic<uint64_t> data_added_{0};

  absl::Mutex mu_;
  std::deque<Batch> queue_ ABSL_GUARDED_BY(mu_);
  bool busy_ ABSL_GUARDED_BY(mu_) = false;  // the thread is processing a batch
  bool stop_ ABSL_GUARDED_BY(mu_) = false;
  absl::Status error_ ABSL_GUARDED_BY(mu_);
  std::thread thread_;  // started with the first batch
};

}  // namespace whorl::agent

#endif  // WHORL_AGENT_UPLOADER_H_
