#include "agent/uploader.h"

#include <malloc.h>

#include <algorithm>
#include <map>

#include "common/status_macros.h"

namespace whorl::agent {

ChunkUploader::~ChunkUploader() {
  {
    absl::MutexLock lock(&mu_);
    stop_ = true;
  }
  if (encoder_.joinable()) encoder_.join();
  if (storer_.joinable()) storer_.join();
}

bool ChunkUploader::Queue(Batch* batch, const Fingerprint& fp, std::string_view plain, Kind kind) {
  if (known_.contains(fp)) return false;
  // Bounded memory whatever the backup's size: forgetting only costs a question to the index
  // for a chunk seen again (present chunks are never uploaded twice: the index answers).
  // Entries not submitted yet are kept, so a batch stays deduplicated.
  if (known_.size() >= kMaxKnown) {
    known_.clear();
    for (const Batch* b : {&pending_, &trees_}) {
      for (const Pending& p : *b) known_.insert(p.fp);
    }
  }
  known_.insert(fp);
  batch->push_back(Pending{fp, std::string(plain), kind, walked_.load(std::memory_order_relaxed)});
  return true;
}

absl::Status ChunkUploader::Add(const Fingerprint& fp, std::string_view plain, Kind kind) {
  absl::MutexLock add_lock(&add_mu_);
  if (!Queue(&pending_, fp, plain, kind)) return absl::OkStatus();
  pending_bytes_ += plain.size();
  if (pending_bytes_ >= kBatchBytes || pending_.size() >= kBatchChunks) return Submit(&pending_);
  return absl::OkStatus();
}

absl::Status ChunkUploader::AddTree(const Fingerprint& fp, std::string_view plain) {
  absl::MutexLock add_lock(&add_mu_);
  if (!Queue(&trees_, fp, plain, kTree)) return absl::OkStatus();
  tree_bytes_ += plain.size();
  if (tree_bytes_ >= kTreeBatchBytes || trees_.size() >= kBatchChunks) return SubmitTrees();
  return absl::OkStatus();
}

absl::Status ChunkUploader::SubmitTrees() {
  if (!pending_.empty()) WHORL_RETURN_IF_ERROR(Submit(&pending_));
  return Submit(&trees_);
}

absl::Status ChunkUploader::Submit(Batch* pending) {
  if (!encoder_.joinable()) {
    encoder_ = std::thread([this] { RunEncoder(); });
    storer_ = std::thread([this] { RunStorer(); });
  }
  Batch batch;
  batch.swap(*pending);
  (pending == &trees_ ? tree_bytes_ : pending_bytes_) = 0;
  absl::MutexLock lock(&mu_);
  mu_.Await(absl::Condition(
      +[](ChunkUploader* u) ABSL_EXCLUSIVE_LOCKS_REQUIRED(u->mu_) {
        return u->queue_.size() < kMaxQueued || !u->error_.ok();
      },
      this));
  if (!error_.ok()) return error_;
  queue_.push_back(std::move(batch));
  return absl::OkStatus();
}

absl::Status ChunkUploader::Flush() {
  {
    absl::MutexLock add_lock(&add_mu_);
    if (!trees_.empty()) {
      WHORL_RETURN_IF_ERROR(SubmitTrees());
    } else if (!pending_.empty()) {
      WHORL_RETURN_IF_ERROR(Submit(&pending_));
    }
  }
  absl::MutexLock lock(&mu_);
  flushing_ = true;  // the encoder hands over what it carries once nothing else waits
  mu_.Await(absl::Condition(
      +[](ChunkUploader* u) ABSL_EXCLUSIVE_LOCKS_REQUIRED(u->mu_) {
        return (u->queue_.empty() && u->encoded_.empty() && u->busy_ == 0 && !u->carrying_ &&
                !u->holding_) ||
               !u->error_.ok();
      },
      this));
  flushing_ = false;
  return error_;
}

void ChunkUploader::RunEncoder() {
  for (;;) {
    Batch batch;
    bool hand_over = false;
    {
      absl::MutexLock lock(&mu_);
      mu_.Await(absl::Condition(
          +[](ChunkUploader* u) ABSL_EXCLUSIVE_LOCKS_REQUIRED(u->mu_) {
            return !u->queue_.empty() || u->stop_ ||
                   (u->flushing_ && (u->carrying_ || u->holding_));
          },
          this));
      if (queue_.empty()) {
        if (stop_) return;  // stopping, nothing left
        hand_over = true;   // flushing: store the open bundles and what the encoder carries
      } else {
        batch = std::move(queue_.front());
        queue_.pop_front();
      }
      ++busy_;
      if (!error_.ok()) {  // after an error nothing more is uploaded
        batch.clear();
        hand_over = false;
      }
    }
    absl::Status s = absl::OkStatus();
    if (!batch.empty() || hand_over) s = Process(std::move(batch), hand_over);
    if (s.ok() && hand_over) s = HandOver();
    absl::MutexLock lock(&mu_);
    --busy_;
    if (!s.ok() && error_.ok()) error_ = s;
  }
}

void ChunkUploader::RunStorer() {
  for (;;) {
    std::vector<EncodedChunk> chunks;
    {
      absl::MutexLock lock(&mu_);
      mu_.Await(absl::Condition(
          +[](ChunkUploader* u)
               ABSL_EXCLUSIVE_LOCKS_REQUIRED(u->mu_) { return !u->encoded_.empty() || u->stop_; },
          this));
      if (encoded_.empty()) return;
      chunks = std::move(encoded_.front());
      encoded_.pop_front();
      ++busy_;
      if (!error_.ok()) chunks.clear();
    }
    uint64_t added = 0;
    for (const auto& c : chunks) added += c.data.size();
    std::vector<Fingerprint> acked;  // for the ack log, which needs them after the put
    if (ack_log_ != nullptr) {
      for (const auto& c : chunks) {
        if (c.members.empty()) acked.push_back(c.fingerprint);
        for (const BundleMember& m : c.members) acked.push_back(m.fingerprint);
      }
    }
    absl::Status s = chunks.empty() ? absl::OkStatus() : repo_->PutChunks(std::move(chunks));
    if (s.ok()) data_added_ += added;
    // The chunk buffers freed by the pipeline's threads stay in malloc's arenas as free holes;
    // hand them back to the kernel now and then, so the peak does not creep up with the size of
    // the backup (measured, first backup of the tree and of a tree twice its size: 71 -> 96 MiB
    // without it, 71 -> 79 MiB trimming every 64 MiB stored; every 16 MiB gave 68 -> 73 MiB but
    // cost the 1 GiB image ~8% of its wall time).
    if (++stored_batches_ % kTrimEveryBatches == 0) ::malloc_trim(0);
    if (s.ok() && ack_log_ != nullptr) s = ack_log_->Append(acked);
    absl::MutexLock lock(&mu_);
    --busy_;
    if (!s.ok() && error_.ok()) error_ = s;
  }
}

CompressionSpec ChunkUploader::BundleCompression(const CompressionSpec& spec, size_t plain_size) {
  if (spec.codec != Codec::kZstd || plain_size >= kSmallBundleBytes) return spec;
  return CompressionSpec{Codec::kZstd, std::max(spec.level, kSmallBundleZstdLevel)};
}

// Asks which chunks of the batch are missing and compresses those, then hands them to the
// storer (waiting while kMaxEncodedQueued encoded stores already wait). With `close_all`, every
// open bundle is closed and compressed too (the end of the backup).
absl::Status ChunkUploader::Process(Batch batch, bool close_all) {
  std::vector<bool> missing;
  if (!batch.empty()) {
    std::vector<Fingerprint> fps;
    fps.reserve(batch.size());
    for (const Pending& p : batch) fps.push_back(p.fp);
    WHORL_ASSIGN_OR_RETURN(missing, repo_->FindMissing(fps));
  }

  // What to encode, in order: a chunk alone, or a closed bundle (of one: a chunk alone).
  std::vector<Batch> units;
  std::vector<bool> strong;  // per unit: a bundle the walk's span closed (BundleCompression)
  auto close_bundle = [&](OpenBundle& b, bool by_span = false) {
    for (const Pending& p : b.items) open_fps_.erase(p.fp);
    if (!b.items.empty()) {
      units.push_back(std::move(b.items));
      strong.push_back(by_span);
    }
    b = OpenBundle{};
  };
  auto close_where = [&](auto pred) {
    for (auto it = open_.begin(); it != open_.end();) {
      if (pred(it->first)) {
        close_bundle(it->second);
        it = open_.erase(it);
      } else {
        ++it;
      }
    }
  };
  const bool bundling = repo_->AcceptsBundles();
  bool closed_for_trees = false;
  for (size_t i = 0; i < batch.size(); ++i) {
    if (!missing[i]) continue;
    Pending& p = batch[i];
    const bool tree = p.kind == kTree;
    if (!bundling || (p.kind != kSmallFile && !tree) || p.plain.size() >= kBundleMemberBytes) {
      units.emplace_back();
      units.back().push_back(std::move(p));
      strong.push_back(false);
      continue;
    }
    // Once in a bundle not stored yet is enough (the uploader forgets what it saw, and asks
    // again, after kMaxKnown chunks).
    if (!open_fps_.insert(p.fp).second) continue;
    // The first tree of a tree batch: the open bundles of file chunks are closed before it, so a
    // tree is still stored after every chunk added before it.
    if (tree && !closed_for_trees) {
      closed_for_trees = true;
      close_where([](const std::pair<bool, size_t>& key) { return !key.first; });
    }
    OpenBundle& b = open_[{tree, repo_->BundleGroup(p.fp)}];
    if (!b.items.empty() && p.walked > b.walked + kBundleSpanBytes) close_bundle(b, !tree);
    if (b.items.empty()) b.walked = p.walked;
    b.bytes += p.plain.size();
    b.items.push_back(std::move(p));
    if (b.bytes >= kBundleBytes || b.items.size() >= kMaxBundleMembers) close_bundle(b);
  }
  batch.clear();
  if (close_all) close_where([](const std::pair<bool, size_t>&) { return true; });
  std::erase_if(open_, [](const auto& e) { return e.second.items.empty(); });

  if (!units.empty()) {
    // Compression is the costly step: spread it over the cores. Each thread takes the next unit
    // not taken yet (units differ in size and in cost by up to 100x: a run of zeros, random
    // bytes, a 2 MiB bundle), so none waits while another still has several to do.
    std::vector<EncodedChunk> chunks(units.size());
    const RepoConfig& config = repo_->config();
    const size_t workers = std::clamp<size_t>(std::thread::hardware_concurrency(), 1, 8);
    std::atomic<size_t> next_unit{0};
    auto encode_units = [&] {
      for (size_t k = next_unit++; k < units.size(); k = next_unit++) {
        EncodedChunk& out = chunks[k];
        Batch& unit = units[k];
        if (unit.size() == 1) {
          const Pending& p = unit[0];
          out.fingerprint = p.fp;
          out.plain_size = p.plain.size();
          out.data = Encode(p.kind == kLargeFile ? config.large_compression : config.compression,
                            p.plain, &out.codec);
          unit.clear();
          continue;
        }
        for (const Pending& p : unit) {
          out.members.push_back({p.fp, static_cast<uint32_t>(p.plain.size())});
        }
        size_t size = BundleTableSize(out.members.size());
        for (const BundleMember& m : out.members) size += m.size;
        std::string plain = EncodeBundleTable(out.members);
        plain.reserve(size);  // one allocation for up to 2 MiB of members
        for (Pending& p : unit) {
          plain += p.plain;
          std::string().swap(p.plain);
        }
        unit.clear();
        out.plain_size = plain.size();
        out.data = Encode(
            strong[k] ? BundleCompression(config.compression, plain.size()) : config.compression,
            plain, &out.codec);
      }
    };
    std::vector<std::thread> threads;
    for (size_t w = 1; w < workers && w < units.size(); ++w) threads.emplace_back(encode_units);
    encode_units();
    for (auto& t : threads) t.join();
    units.clear();

    // Carried over batches until kStoreBytes of them are encoded: a nightly run finds a few new
    // chunks in each batch, and each store is a group commit (fsyncs), so it is not paid per
    // batch.
    for (EncodedChunk& c : chunks) {
      carry_bytes_ += c.data.size();
      carry_.push_back(std::move(c));
    }
  }
  {
    absl::MutexLock lock(&mu_);
    carrying_ = !carry_.empty();
    holding_ = !open_.empty();
  }
  if (carry_bytes_ >= kStoreBytes || carry_.size() >= kBatchChunks) return HandOver();
  return absl::OkStatus();
}

absl::Status ChunkUploader::HandOver() {
  absl::MutexLock lock(&mu_);
  mu_.Await(absl::Condition(
      +[](ChunkUploader* u) ABSL_EXCLUSIVE_LOCKS_REQUIRED(u->mu_) {
        return u->encoded_.size() < kMaxEncodedQueued || !u->error_.ok() || u->stop_;
      },
      this));
  if (!error_.ok()) return error_;
  if (!carry_.empty()) encoded_.push_back(std::move(carry_));
  carry_.clear();
  carry_bytes_ = 0;
  carrying_ = false;
  return absl::OkStatus();
}

}  // namespace whorl::agent
