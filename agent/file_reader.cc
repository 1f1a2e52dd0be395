#include "agent/file_reader.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <memory>
#include <thread>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "common/file_util.h"
#include "common/status_macros.h"

namespace whorl::agent {
namespace {

constexpr size_t kAlign = 4096;  // O_DIRECT: buffer address, file offset and length

size_t RoundUp(size_t n) { return (n + kAlign - 1) / kAlign * kAlign; }

// One aligned allocation: `prefix` bytes for the previous block's unfinished tail, then the
// block the reads fill. Mapped straight from the kernel, not from malloc: a big file's blocks
// (a megabyte or more each, made and freed per file) left holes in malloc's heap that its
// trimming could not give back, and the peak grew with the corpus (first backup of the tree
// twice the size, three cold runs: 86-96 MiB, with mapped blocks 76-77; the tree 67-68 either
// way, wall time the same).
class Block {
 public:
  Block(size_t prefix, size_t size) : prefix_(prefix), size_(size), mapped_(prefix + size) {
    void* p = ::mmap(nullptr, mapped_, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) std::abort();  // out of memory
    base_ = static_cast<uint8_t*>(p);   // page-aligned, as O_DIRECT needs
  }
  ~Block() { ::munmap(base_, mapped_); }
  Block(const Block&) = delete;
  Block& operator=(const Block&) = delete;
  uint8_t* data() const { return base_ + prefix_; }
  size_t size() const { return size_; }
  size_t prefix() const { return prefix_; }
  size_t filled = 0;  // bytes the last read put in data()
  int holds = 0;      // ReadAheadSource: users of the block (its mutex guards this)

 private:
  size_t prefix_, size_, mapped_;
  uint8_t* base_;
};

// Fills `block` from fd's current offset until it is full or the file ends, or once it holds
// `expect` (> 0) bytes (where the caller expects the file to end: the next Fill finds out whether
// it does, with the read that returns 0). With O_DIRECT on, a read the filesystem refuses (EINVAL)
// or a short one (the unaligned end of the file) turns O_DIRECT off for the rest: the page cache
// serves what remains.
absl::Status Fill(int fd, const std::string& path, bool* direct, Block* block,
                  size_t expect = SIZE_MAX) {
  block->filled = 0;
  const size_t want = std::min(block->size(), expect);
  while (block->filled < want) {
    const ssize_t n = ::read(fd, block->data() + block->filled, block->size() - block->filled);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && errno == EINVAL && *direct) {
      *direct = false;
      ::fcntl(fd, F_SETFL, ::fcntl(fd, F_GETFL) & ~O_DIRECT);
      continue;
    }
    if (n < 0) return ErrnoStatus("read", path, errno);
    if (n == 0) break;
    block->filled += static_cast<size_t>(n);
    if (*direct && block->filled % kAlign != 0) {
      *direct = false;
      ::fcntl(fd, F_SETFL, ::fcntl(fd, F_GETFL) & ~O_DIRECT);
    }
  }
  return absl::OkStatus();
}

// Where the blocks come from: read on the caller's thread, or by a read-ahead thread.
class BlockSource {
 public:
  virtual ~BlockSource() = default;
  // The next block of the file (filled == 0 at its end). The previous block stays valid until
  // TailCopied (or the next call), so its tail can be copied into the new block's prefix.
  virtual absl::StatusOr<Block*> Next() = 0;
  // The caller is done with the block before the one Next returned last.
  virtual void TailCopied() {}
  // Another user of `block` (which Next returned): it is not reused until Release.
  virtual void Hold(Block* /*block*/) {}
  virtual void Release(Block* /*block*/) {}
};

// The caller's thread reads, alternating two blocks (kept by the FileChunker between files).
//
// A file of `known_size` bytes (its stat; -1 if unknown) is read until that many bytes, then
// once more to find its end: a small file took three reads (its bytes, a read returning 0 to end
// the block, another to end the file), 60k of a first backup's read calls for the tree's 20k
// files. A file that is longer than its stat said is read on to its end; one of size 0 (where
// /proc's files say 0) is read as if its size were unknown.
class SyncSource : public BlockSource {
 public:
  SyncSource(int fd, const std::string& path, Block* a, Block* b, int64_t known_size)
      : fd_(fd), path_(path), blocks_{a, b}, known_size_(known_size) {}
  absl::StatusOr<Block*> Next() override {
    Block* b = blocks_[next_];
    next_ ^= 1;
    bool direct = false;
    const size_t expect = known_size_ > 0 && static_cast<uint64_t>(known_size_) > offset_
                              ? static_cast<size_t>(static_cast<uint64_t>(known_size_) - offset_)
                              : SIZE_MAX;
    if (absl::Status s = Fill(fd_, path_, &direct, b, expect); !s.ok()) return s;
    offset_ += b->filled;
    return b;
  }

 private:
  int fd_;
  const std::string& path_;
  Block* blocks_[2];
  const int64_t known_size_;
  uint64_t offset_ = 0;  // bytes read so far
  int next_ = 0;
};

// A thread reads ahead into `blocks` blocks: while the caller chunks and hashes one block, the
// disk fills another. The previous block goes back to the thread as soon as its tail is copied
// (TailCopied) and every Hold on it is released, so two blocks keep one read in flight all the
// time when the caller hashes too (three did before: 4.5 MB more at the peak of a tree's first
// backup, four threads on big files at once); a pipelined file needs more (see HashStage).
class ReadAheadSource : public BlockSource {
 public:
  ReadAheadSource(int fd, const std::string& path, size_t prefix, size_t size, int blocks)
      : fd_(fd), path_(path) {
    for (int i = 0; i < blocks; ++i) {
      blocks_.push_back(std::make_unique<Block>(prefix, size));
      free_.push_back(blocks_.back().get());
    }
    thread_ = std::thread([this] { Run(); });
  }
  ~ReadAheadSource() override {
    {
      absl::MutexLock lock(&mu_);
      stop_ = true;
    }
    thread_.join();
  }

  absl::StatusOr<Block*> Next() override {
    absl::MutexLock lock(&mu_);
    if (previous_ != nullptr) Drop(previous_);  // TailCopied was not called
    previous_ = current_;
    mu_.Await(absl::Condition(
        +[](ReadAheadSource* s) ABSL_EXCLUSIVE_LOCKS_REQUIRED(s->mu_) {
          return !s->filled_.empty() || !s->error_.ok();
        },
        this));
    if (!error_.ok()) return error_;
    current_ = filled_.front();
    filled_.pop_front();
    current_->holds = 1;
    return current_;
  }

  void TailCopied() override {
    absl::MutexLock lock(&mu_);
    if (previous_ != nullptr) Drop(previous_);
    previous_ = nullptr;
  }

  void Hold(Block* block) override {
    absl::MutexLock lock(&mu_);
    ++block->holds;
  }
  void Release(Block* block) override {
    absl::MutexLock lock(&mu_);
    Drop(block);
  }

 private:
  void Drop(Block* block) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (--block->holds == 0) free_.push_back(block);
  }

  void Run() {
    bool direct = true;
    for (;;) {
      Block* b;
      {
        absl::MutexLock lock(&mu_);
        mu_.Await(absl::Condition(
            +[](ReadAheadSource* s)
                 ABSL_EXCLUSIVE_LOCKS_REQUIRED(s->mu_) { return !s->free_.empty() || s->stop_; },
            this));
        if (stop_) return;
        b = free_.front();
        free_.pop_front();
      }
      absl::Status s = Fill(fd_, path_, &direct, b);
      absl::MutexLock lock(&mu_);
      if (!s.ok()) {
        error_ = s;
        return;
      }
      filled_.push_back(b);
      if (b->filled == 0) return;  // the end: the caller stops asking
    }
  }

  int fd_;
  const std::string& path_;
  std::vector<std::unique_ptr<Block>> blocks_;
  absl::Mutex mu_;
  std::deque<Block*> free_ ABSL_GUARDED_BY(mu_);
  std::deque<Block*> filled_ ABSL_GUARDED_BY(mu_);
  Block* current_ ABSL_GUARDED_BY(mu_) = nullptr;   // the caller's block
  Block* previous_ ABSL_GUARDED_BY(mu_) = nullptr;  // the one before it, still read for its tail
  absl::Status error_ ABSL_GUARDED_BY(mu_);
  bool stop_ ABSL_GUARDED_BY(mu_) = false;
  std::thread thread_;  // last: started once everything above exists
};

// The hashing thread of a pipelined file: calls `on_chunk` for the chunks of each block pushed,
// in order, then releases the block to its source. At most kMaxPending blocks wait, so the
// caller stays at most that far ahead. After an error of `on_chunk`, or once destroyed before
// Finish (the caller failed), it calls nothing more; Push and Finish return that error.
class HashStage {
 public:
  static constexpr size_t kMaxPending = 2;
  // Blocks a pipelined read needs: one being read, one being cut, one being hashed and
  // kMaxPending waiting to be hashed.
  static constexpr int kSourceBlocks = 3 + kMaxPending;

  HashStage(const std::function<absl::Status(std::string_view)>& on_chunk, BlockSource* source)
      : on_chunk_(on_chunk), source_(source), thread_([this] { Run(); }) {}
  ~HashStage() {
    {
      absl::MutexLock lock(&mu_);
      stop_ = true;
    }
    thread_.join();
  }
  HashStage(const HashStage&) = delete;
  HashStage& operator=(const HashStage&) = delete;

  // Queues the chunks cut from `block` (held for the stage until they are hashed).
  absl::Status Push(Block* block, std::vector<std::string_view> chunks) {
    source_->Hold(block);
    absl::MutexLock lock(&mu_);
    mu_.Await(absl::Condition(
        +[](HashStage* h) ABSL_EXCLUSIVE_LOCKS_REQUIRED(h->mu_) {
          return h->pending_.size() < kMaxPending || !h->error_.ok();
        },
        this));
    pending_.push_back(Work{block, std::move(chunks)});
    return error_;
  }

  // Waits until every chunk pushed is hashed (or one failed).
  absl::Status Finish() {
    absl::MutexLock lock(&mu_);
    mu_.Await(absl::Condition(
        +[](HashStage* h)
             ABSL_EXCLUSIVE_LOCKS_REQUIRED(h->mu_) { return h->pending_.empty() && !h->busy_; },
        this));
    return error_;
  }

 private:
  struct Work {
    Block* block;
    std::vector<std::string_view> chunks;
  };

  void Run() {
    for (;;) {
      Work work;
      bool failed;
      {
        absl::MutexLock lock(&mu_);
        mu_.Await(absl::Condition(
            +[](HashStage* h)
                 ABSL_EXCLUSIVE_LOCKS_REQUIRED(h->mu_) { return !h->pending_.empty() || h->stop_; },
            this));
        if (pending_.empty()) return;
        work = std::move(pending_.front());
        pending_.pop_front();
        busy_ = true;
        failed = !error_.ok() || stop_;  // stopping: the caller has returned an error
      }
      absl::Status s;
      for (size_t i = 0; i < work.chunks.size() && !failed && s.ok(); ++i) {
        s = on_chunk_(work.chunks[i]);
      }
      source_->Release(work.block);
      absl::MutexLock lock(&mu_);
      busy_ = false;
      if (!s.ok() && error_.ok()) error_ = s;
    }
  }

  const std::function<absl::Status(std::string_view)>& on_chunk_;
  BlockSource* const source_;
  absl::Mutex mu_;
  std::deque<Work> pending_ ABSL_GUARDED_BY(mu_);
  bool busy_ ABSL_GUARDED_BY(mu_) = false;
  bool stop_ ABSL_GUARDED_BY(mu_) = false;
  absl::Status error_ ABSL_GUARDED_BY(mu_);
  std::thread thread_;  // last: started once everything above exists
};

}  // namespace

class FileChunker::Buffers {
 public:
  Buffers(size_t prefix, size_t size) : a(prefix, size), b(prefix, size) {}
  Block a, b;
};

FileChunker::FileChunker(const Chunker& chunker, const ChunkFileOptions& options)
    : chunker_(chunker), options_(options) {}

FileChunker::~FileChunker() = default;

absl::StatusOr<uint64_t> FileChunker::Chunk(
    int fd, const std::string& path, const std::function<absl::Status(std::string_view)>& on_chunk,
    const std::function<void(uint64_t)>& on_read, int64_t known_size) {
  const size_t max = chunker_.params().max_size;
  // The unfinished tail of a block is shorter than max_size (the chunker cuts at max_size).
  const size_t prefix = RoundUp(max);
  if (known_size < 0) {
    struct stat st;
    if (::fstat(fd, &st) == 0) known_size = st.st_size;
  }
  const bool big = known_size >= 0 && static_cast<uint64_t>(known_size) >= options_.direct_min_size;
  std::unique_ptr<BlockSource> source;
  std::unique_ptr<HashStage> hasher;  // destroyed (joined) before the source's blocks
  if (big && ::fcntl(fd, F_SETFL, ::fcntl(fd, F_GETFL) | O_DIRECT) == 0) {
    const bool pipelined = static_cast<uint64_t>(known_size) >= options_.pipeline_min_size;
    const size_t block = pipelined ? options_.pipelined_block_size : options_.direct_block_size;
    source = std::make_unique<ReadAheadSource>(fd, path, prefix, RoundUp(std::max(block, max)),
                                               pipelined ? HashStage::kSourceBlocks : 2);
    if (pipelined) hasher = std::make_unique<HashStage>(on_chunk, source.get());
  } else {
    if (buffers_ == nullptr) {
      buffers_ = std::make_unique<Buffers>(prefix, RoundUp(std::max(options_.block_size, max)));
    }
    source = std::make_unique<SyncSource>(fd, path, &buffers_->a, &buffers_->b, known_size);
  }

  uint64_t total = 0;
  const uint8_t* tail = nullptr;  // the unfinished chunk at the end of the previous block
  size_t tail_len = 0;
  for (;;) {
    absl::StatusOr<Block*> next = source->Next();
    if (!next.ok()) return next.status();
    Block* b = *next;
    on_read(b->filled);
    uint8_t* begin = b->data() - tail_len;
    if (tail_len > 0) std::memmove(begin, tail, tail_len);
    source->TailCopied();
    const bool eof = b->filled == 0;
    size_t n = tail_len + b->filled;
    std::vector<std::string_view> cut;  // a pipelined file's chunks of this block
    for (;;) {
      const size_t len = chunker_.NextChunk(begin, n, eof);
      if (len == 0) break;
      const std::string_view chunk(reinterpret_cast<const char*>(begin), len);
      if (hasher != nullptr) {
        cut.push_back(chunk);
      } else if (absl::Status s = on_chunk(chunk); !s.ok()) {
        return s;
      }
      begin += len;
      n -= len;
      total += len;
    }
    if (hasher != nullptr && !cut.empty()) {
      if (absl::Status s = hasher->Push(b, std::move(cut)); !s.ok()) return s;
    }
    if (eof) {
      if (hasher != nullptr) WHORL_RETURN_IF_ERROR(hasher->Finish());
      return total;
    }
    tail = begin;
    tail_len = n;
  }
}

}  // namespace whorl::agent
