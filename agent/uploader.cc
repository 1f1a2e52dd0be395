#include "agent/uploader.h"

#include <algorithm>
#include <thread>

#include "common/status_macros.h"

namespace whorl::agent {

absl::Status ChunkUploader::Add(const Fingerprint& fp, std::string_view plain) {
  if (!known_.insert(fp).second) return absl::OkStatus();
  pending_.emplace_back(fp, std::string(plain));
  pending_bytes_ += plain.size();
  if (pending_bytes_ >= kBatchBytes || pending_.size() >= kBatchChunks) return Flush();
  return absl::OkStatus();
}

absl::Status ChunkUploader::Flush() {
  if (pending_.empty()) return absl::OkStatus();
  std::vector<Fingerprint> fps;
  fps.reserve(pending_.size());
  for (const auto& p : pending_) fps.push_back(p.first);
  WHORL_ASSIGN_OR_RETURN(std::vector<bool> missing, repo_->FindMissing(fps));

  std::vector<size_t> todo;
  for (size_t i = 0; i < pending_.size(); ++i) {
    if (missing[i]) todo.push_back(i);
  }
  // Compression is the costly step: spread it over the cores.
  std::vector<EncodedChunk> chunks(todo.size());
  const CompressionSpec spec = repo_->config().compression;
  const size_t workers = std::clamp<size_t>(std::thread::hardware_concurrency(), 1, 8);
  auto encode_range = [&](size_t w) {
    for (size_t k = w; k < todo.size(); k += workers) {
      const auto& [fp, plain] = pending_[todo[k]];
      chunks[k].fingerprint = fp;
      chunks[k].plain_size = plain.size();
      chunks[k].data = Encode(spec, plain, &chunks[k].codec);
    }
  };
  std::vector<std::thread> threads;
  for (size_t w = 1; w < workers && w < todo.size(); ++w) threads.emplace_back(encode_range, w);
  encode_range(0);
  for (auto& t : threads) t.join();

  for (const auto& c : chunks) data_added_ += c.data.size();
  pending_.clear();
  pending_bytes_ = 0;
  if (chunks.empty()) return absl::OkStatus();
  return repo_->PutChunks(std::move(chunks));
}

}  // namespace whorl::agent
