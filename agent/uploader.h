// ChunkUploader: collects chunks (fingerprint + plain bytes) into batches; per batch it asks
// the repository which are missing (one FindMissing), compresses only those, and stores them
// (one PutChunks: one group commit). Chunks already known in this session are not asked again.
//
// Memory is bounded by the batch size (kBatchBytes of plain data).
// Thread-compatible: one thread calls Add/Flush.
#ifndef WHORL_AGENT_UPLOADER_H_
#define WHORL_AGENT_UPLOADER_H_

#include <string>
#include <string_view>
#include <unordered_set>
#include <vector>

#include "agent/repository.h"

namespace whorl::agent {

class ChunkUploader {
 public:
  static constexpr size_t kBatchBytes = 32 << 20;
  static constexpr size_t kBatchChunks = 4096;

  explicit ChunkUploader(Repository* repo) : repo_(repo) {}

  // Queues a chunk; may flush a full batch (and return its error).
  absl::Status Add(const Fingerprint& fp, std::string_view plain);
  // Uploads everything queued. On OK every chunk added so far is durable in the repository.
  absl::Status Flush();

  // Encoded bytes this uploader stored (chunks the repository lacked).
  uint64_t data_added() const { return data_added_; }

 private:
  Repository* repo_;
  std::vector<std::pair<Fingerprint, std::string>> pending_;
  size_t pending_bytes_ = 0;
  std::unordered_set<Fingerprint, FingerprintHash> known_;  // present or queued
  uint64_t data_added_ = 0;
};

}  // namespace whorl::agent

#endif  // WHORL_AGENT_UPLOADER_H_
