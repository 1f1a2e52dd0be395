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
  for (std::thread& t : compressors_) t.join();
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

absl::Status ChunkUploader::AddTree(const Fingerprint& fp, std::string_view plain, Kind kind) {
  absl::MutexLock add_lock(&add_mu_);
  if (!Queue(&trees_, fp, plain, kind)) return absl::OkStatus();
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
    const size_t n = std::clamp<size_t>(std::thread::hardware_concurrency(), 1, 8);
    for (size_t i = 0; i < n; ++i) compressors_.emplace_back([this] { RunCompressor(); });
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
        return (u->queue_.empty() && u->units_.empty() && u->encoded_.empty() && u->busy_ == 0 &&
                u->carry_.empty() && !u->holding_) ||
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
            // Flushing: close the open bundles, then, once every unit is encoded, hand over
            // what is carried (less than kStoreBytes).
            return !u->queue_.empty() || u->stop_ ||
                   (u->flushing_ &&
                    (u->holding_ || (!u->carry_.empty() && u->units_.empty() && !u->draining_)));
          },
          this));
      if (queue_.empty()) {
        if (stop_) return;  // stopping, nothing left
        hand_over = true;   // flushing: the open bundles, or what is carried
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
    absl::MutexLock lock(&mu_);
    // Every bundle is closed and every unit drained: what is carried goes to the storer.
    if (s.ok() && hand_over && !holding_ && units_.empty() && !draining_) s = HandOver();
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
      storing_ = true;
      if (!error_.ok()) chunks.clear();
    }
    uint64_t added = 0;
    bool holds_bundles = false;
    for (const auto& c : chunks) {
      added += c.data.size();
      holds_bundles |= !c.members.empty();
    }
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
    // cost the 1 GiB image ~8% of its wall time). Every page a trim gives back is faulted in
    // again when the pipeline reuses it, and a big file's chunks, all of a few sizes, reuse
    // their holes as they come: a store of chunks alone counts a quarter of one holding bundles
    // (the 1 GiB image, trimmed 7 times before, now once: 22.5k -> 15k page faults, 2.27-2.38
    // -> 2.18-2.31 s, system time 0.86-0.93 -> 0.67-0.85 s, peak +1 MiB). Trimming by malloc's free
    // bytes instead (mallinfo2) trimmed at every store once they passed the bar, since a trim does
    // not make them fewer; by the growth of the resident set, at nearly every store of a cluster
    // backup (8 MiB each): 3.7 -> 7.6 s.
    trim_credit_ += holds_bundles ? kTrimCreditPerBundleStore : 1;
    if (trim_credit_ >= kTrimCredit) {
      trim_credit_ = 0;
      ::malloc_trim(0);
    }
    if (s.ok() && ack_log_ != nullptr) s = ack_log_->Append(acked);
    absl::MutexLock lock(&mu_);
    --busy_;
    storing_ = false;
    if (!s.ok() && error_.ok()) error_ = s;
  }
}

CompressionSpec ChunkUploader::BundleCompression(const CompressionSpec& spec, size_t plain_size) {
  if (spec.codec != Codec::kZstd || plain_size >= kSmallBundleBytes) return spec;
  return CompressionSpec{Codec::kZstd, std::max(spec.level, kSmallBundleZstdLevel)};
}

// Asks which chunks of the batch are missing and queues those for the compressors, alone or in
// the bundles they close (waiting while kMaxUnitBytes wait). With `close_all`, every open bundle
// is closed and queued too (the end of the backup).
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
    const bool tree = p.kind == kTree || p.kind == kChunkList;  // from the tree batch
    // The first tree or list of a tree batch: the open bundles of file chunks are closed before
    // it, so a tree (or a list) is still stored after every chunk added before it.
    if (tree && !closed_for_trees) {
      closed_for_trees = true;
      close_where([](const std::pair<Kind, size_t>& key) {
        return key.first == kSmallFile || key.first == kMediumFile;
      });
    }
    const bool file = p.kind == kSmallFile || p.kind == kMediumFile;
    if (!bundling || (!file && !tree) || p.plain.size() >= kBundleMemberBytes) {
      units.emplace_back();
      units.back().push_back(std::move(p));
      strong.push_back(false);
      continue;
    }
    // Once in a bundle not stored yet is enough (the uploader forgets what it saw, and asks
    // again, after kMaxKnown chunks).
    if (!open_fps_.insert(p.fp).second) continue;
    // Medium files' chunks (of files read with a read-ahead thread, agent/file_reader.h) are
    // bundled apart from small files': the pool reads such a file while its other threads read
    // many small ones, and their chunks, interleaved in one bundle, compressed worse than each
    // file's chunks together (the source tree's 49 files of 1-16 MiB, 40% of its bytes: packs
    // 134.6 -> 133.8 MB; 133.0 with one file read at a time).
    OpenBundle& b = open_[{p.kind, repo_->BundleGroup(p.fp)}];
    if (!b.items.empty() && p.walked > b.walked + kBundleSpanBytes) close_bundle(b, !tree);
    if (b.items.empty()) b.walked = p.walked;
    b.bytes += p.plain.size();
    b.items.push_back(std::move(p));
    if (b.bytes >= kBundleBytes || b.items.size() >= kMaxBundleMembers) close_bundle(b);
  }
  batch.clear();
  if (close_all) close_where([](const std::pair<Kind, size_t>&) { return true; });
  std::erase_if(open_, [](const auto& e) { return e.second.items.empty(); });

  for (size_t k = 0; k < units.size(); ++k) {
    auto unit = std::make_unique<Unit>();
    unit->items = std::move(units[k]);
    unit->strong = strong[k];
    for (const Pending& p : unit->items) unit->plain_bytes += p.plain.size();
    absl::MutexLock lock(&mu_);
    mu_.Await(absl::Condition(
        +[](ChunkUploader* u) ABSL_EXCLUSIVE_LOCKS_REQUIRED(u->mu_) {
          return u->unit_bytes_ < kMaxUnitBytes || !u->error_.ok() || u->stop_;
        },
        this));
    if (!error_.ok()) return error_;
    if (stop_) return absl::CancelledError("uploader stopped");
    unit_bytes_ += unit->plain_bytes;
    units_.push_back(std::move(unit));
  }
  absl::MutexLock lock(&mu_);
  holding_ = !open_.empty();
  return absl::OkStatus();
}

// On a compressor thread: a unit alone is encoded with the compression of its kind; a bundle's
// members go after its table, in one buffer, encoded as one.
void ChunkUploader::Encode(Unit* unit) const {
  const RepoConfig& config = repo_->config();
  EncodedChunk& out = unit->out;
  Batch& items = unit->items;
  // Chunk lists are fingerprints, which do not compress: zstd would spend CPU, and its context's
  // memory in each thread that met a list, for nothing.
  const bool lists = !items.empty() && items[0].kind == kChunkList;
  if (items.size() == 1) {
    const Pending& p = items[0];
    out.fingerprint = p.fp;
    out.plain_size = p.plain.size();
    out.data = whorl::Encode(lists                  ? CompressionSpec{Codec::kNone, 0}
                             : p.kind == kLargeFile ? config.large_compression
                                                    : config.compression,
                             p.plain, &out.codec);
    items.clear();
    return;
  }
  for (const Pending& p : items) {
    out.members.push_back({p.fp, static_cast<uint32_t>(p.plain.size())});
  }
  // The bundle is put together in this thread's own buffer, kept from bundle to bundle: a
  // fresh 2 MiB block for each was a fresh stretch of the heap's top each time (glibc gives
  // those pages back when they are freed), so every page of every bundle was faulted in again:
  // 60% of a first backup's page faults, ~20% of its CPU on a VM where a fault is dear.
  thread_local std::string plain;
  plain.clear();
  plain += EncodeBundleTable(out.members);
  size_t size = plain.size();
  for (const BundleMember& m : out.members) size += m.size;
  plain.reserve(size);
  for (Pending& p : items) {
    plain += p.plain;
    std::string().swap(p.plain);
  }
  items.clear();
  out.plain_size = plain.size();
  out.data = whorl::Encode(lists          ? CompressionSpec{Codec::kNone, 0}
                           : unit->strong ? BundleCompression(config.compression, plain.size())
                                          : config.compression,
                           plain, &out.codec);
}

void ChunkUploader::RunCompressor() {
  for (;;) {
    Unit* unit = nullptr;
    {
      absl::MutexLock lock(&mu_);
      mu_.Await(absl::Condition(
          +[](ChunkUploader* u) ABSL_EXCLUSIVE_LOCKS_REQUIRED(u->mu_) {
            return u->next_unit_ < u->units_.size() || u->stop_;
          },
          this));
      if (stop_) return;
      unit = units_[next_unit_++].get();  // stays in units_ (and alive) until drained
    }
    Encode(unit);
    absl::MutexLock lock(&mu_);
    unit->done = true;
    if (!draining_) Drain();
  }
}

void ChunkUploader::Drain() {
  draining_ = true;
  while (!units_.empty() && units_.front()->done) {
    std::unique_ptr<Unit> unit = std::move(units_.front());
    units_.pop_front();
    --next_unit_;
    unit_bytes_ -= unit->plain_bytes;
    carry_bytes_ += unit->out.data.size();
    carry_bundles_ |= !unit->out.members.empty();
    carry_.push_back(std::move(unit->out));
    unit.reset();
    // Carried over batches until a store's bytes are encoded: a nightly run finds a few new
    // chunks in each batch, and each store is a group commit (fsyncs), so it is not paid per
    // batch.
    if (carry_bytes_ >= (carry_bundles_ ? bundle_store_bytes_ : chunk_store_bytes_) ||
        carry_.size() >= kBatchChunks) {
      if (!HandOver().ok()) break;  // after an error nothing more is stored
    }
  }
  draining_ = false;
}

absl::Status ChunkUploader::HandOver() {
  mu_.Await(absl::Condition(
      +[](ChunkUploader* u) ABSL_EXCLUSIVE_LOCKS_REQUIRED(u->mu_) {
        return u->encoded_.size() + (u->storing_ ? 1 : 0) < kMaxStores || !u->error_.ok() ||
               u->stop_;
      },
      this));
  if (!error_.ok() || stop_) {
    carry_.clear();
    carry_bytes_ = 0;
    return error_.ok() ? absl::CancelledError("uploader stopped") : error_;
  }
  if (!carry_.empty()) encoded_.push_back(std::move(carry_));
  carry_.clear();
  carry_bytes_ = 0;
  carry_bundles_ = false;
  return absl::OkStatus();
}

}  // namespace whorl::agent
