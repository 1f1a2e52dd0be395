#include "agent/backup.h"

#include <dirent.h>
#include <fcntl.h>
#include <fnmatch.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <deque>
#include <filesystem>
#include <map>
#include <optional>
#include <string_view>
#include <thread>
#include <unordered_map>
#include <unordered_set>
#include <utility>

#include "absl/synchronization/mutex.h"
#include "agent/file_reader.h"
#include "agent/objects.h"
#include "agent/uploader.h"
#include "agent/walk_ahead.h"
#include "common/chunker.h"
#include "common/file_util.h"
#include "common/kill_point.h"
#include "common/status_macros.h"

namespace whorl::agent {
namespace {

using Clock = std::chrono::steady_clock;

// How the pool reads a file. The walk starts the page-cache read of a file under
// direct_min_size itself (SaveFile), and the uploader bundles the chunks of files from there to
// kLargeFileBytes apart (ReadFile).
constexpr ChunkFileOptions kFileOptions{};

// Chunks of files smaller than kLargeFileBytes (agent/repo_config.h) may share bundles
// (agent/uploader.h); a larger file's chunks are compressed one by one, with the repository's
// large_compression. A big file's chunks already carry their own context; bundling the 1 GiB
// image's chunks saved 3% of its bytes for 7% more CPU, while the source tree's files (none over
// 16 MiB) shrink by 9%.

int64_t Ns(const struct timespec& ts) {
  return static_cast<int64_t>(ts.tv_sec) * 1000000000 + ts.tv_nsec;
}

// The backed-up paths as a trie: a target's subtree is saved whole; the nodes above the
// targets become directories holding only what leads to a target.
struct PathTrie {
  bool target = false;
  std::map<std::string, PathTrie> children;
};

// Whether an --exclude glob matches: globs without '/' match the base name, others the path.
bool IsExcluded(const std::vector<std::string>& excludes, const std::string& path,
                const std::string& name) {
  for (const std::string& glob : excludes) {
    const bool with_slash = glob.find('/') != std::string::npos;
    if (fnmatch(glob.c_str(), (with_slash ? path : name).c_str(), 0) == 0) return true;
  }
  return false;
}

// Scans, chunks and saves; one per backup run. Thread-compatible.
// Totals counted by the progress scan (ScanTotals) while the backup runs.
struct ScanCounts {
  std::atomic<uint64_t> files{0};
  std::atomic<uint64_t> bytes{0};
  std::atomic<bool> done{false};
  std::atomic<bool> stop{false};
};

// Counts the regular files below `paths` and their bytes (lstat only, no symlinks followed,
// unreadable directories skipped): the denominator of the progress line, as restic shows it.
void ScanTotals(const std::vector<std::string>& paths, ScanCounts* counts) {
  namespace fs = std::filesystem;
  for (const std::string& p : paths) {
    std::error_code ec;
    const fs::file_status top = fs::symlink_status(p, ec);
    if (ec) continue;
    if (fs::is_regular_file(top)) {
      counts->files.fetch_add(1, std::memory_order_relaxed);
      counts->bytes.fetch_add(fs::file_size(p, ec), std::memory_order_relaxed);
      continue;
    }
    if (!fs::is_directory(top)) continue;
    fs::recursive_directory_iterator it(p, fs::directory_options::skip_permission_denied, ec);
    for (; !ec && it != fs::recursive_directory_iterator(); it.increment(ec)) {
      if (counts->stop.load(std::memory_order_relaxed)) return;
      std::error_code ec2;
      if (it->is_symlink(ec2)) continue;
      if (it->is_regular_file(ec2)) {
        counts->files.fetch_add(1, std::memory_order_relaxed);
        const uintmax_t size = it->file_size(ec2);
        if (!ec2) counts->bytes.fetch_add(size, std::memory_order_relaxed);
      }
    }
  }
  counts->done.store(true, std::memory_order_release);
}

// A file the walk hands to the worker pool to read, chunk and hash.
struct FileJob {
  std::string path;
  struct stat st;
  v1::Node node;         // metadata from the walk; the worker sets its chunks and size
  absl::Status status;   // the file's own failure: the file is skipped
  bool fatal = false;    // `status` is the repository's failure: the backup ends
  bool changed = false;  // the parent snapshot had a file here (else it is new)
  int fd = -1;           // opened by the walk (OpenAhead), or -1; the job owns it
  std::vector<std::string> warnings;

  FileJob() = default;
  FileJob(const FileJob&) = delete;
  FileJob& operator=(const FileJob&) = delete;
  ~FileJob() {
    if (fd >= 0) ::close(fd);
  }
};

// Opens a file to read it: without updating its access time where the caller may (O_NOATIME is
// refused with EPERM on another user's file).
int OpenToRead(const std::string& path, int flags = 0) {
  int fd = ::open(path.c_str(), O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NOATIME | flags);
  if (fd < 0 && errno == EPERM)
    fd = ::open(path.c_str(), O_RDONLY | O_NOFOLLOW | O_CLOEXEC | flags);
  return fd;
}

// The walk's read-ahead of a small file: opens the file `st` describes and asks the kernel to
// read it into the page cache now (POSIX_FADV_WILLNEED), so that its read is in flight while the
// pool still works on earlier files. Returns the fd, or -1 if it cannot (the pool then opens the
// file itself and reports what fails). O_NONBLOCK: what is at `path` now may be a FIFO, whose
// open would block the walk; a regular file's reads ignore the flag.
int OpenAhead(const std::string& path, const struct stat& st) {
  const int fd = OpenToRead(path, O_NONBLOCK);
  if (fd < 0) return -1;
  struct stat now;
  if (::fstat(fd, &now) != 0 || !S_ISREG(now.st_mode) || now.st_ino != st.st_ino ||
      now.st_dev != st.st_dev) {
    ::close(fd);
    return -1;
  }
  ::posix_fadvise(fd, 0, 0, POSIX_FADV_WILLNEED);
  return fd;
}

// Reads, chunks and hashes files on kWorkers threads, so that several reads are in flight (on
// this project's 2-core VM, 4 readers took a cold 430 MiB tree of 20k files from 3.3 s to
// 1.3 s) and hashing runs beside compression. At most kMaxQueued jobs wait, so the walk stays
// a bounded distance ahead. 3 threads since the walk starts small files' reads itself
// (OpenAhead) and runs ahead of the pool (Defer): as fast as 4 on the tree's first backup, with
// fewer files' chunks interleaved in the bundles (packs 133.6-133.9 -> 132.9-133.6 MB) and one
// thread's buffers less at the peak.
class FilePool {
 public:
  static constexpr size_t kWorkers = 3;
  static constexpr size_t kMaxQueued = 64;

  explicit FilePool(std::function<void(FileChunker*, FileJob*)> work) : work_(std::move(work)) {}
  ~FilePool() {
    {
      absl::MutexLock lock(&mu_);
      stop_ = true;
    }
    for (auto& t : threads_) t.join();
  }

  void Submit(std::shared_ptr<FileJob> job, const Chunker& chunker) {
    absl::MutexLock lock(&mu_);
    if (threads_.empty()) {
      for (size_t i = 0; i < kWorkers; ++i)
        threads_.emplace_back([this, &chunker] { Run(chunker); });
    }
    mu_.Await(absl::Condition(
        +[](FilePool* p)
             ABSL_EXCLUSIVE_LOCKS_REQUIRED(p->mu_) { return p->queue_.size() < kMaxQueued; },
        this));
    queue_.push_back(job);
  }

  // Waits for `job`, or for `timeout` (then false).
  bool Wait(const FileJob* job, absl::Duration timeout) {
    absl::MutexLock lock(&mu_);
    auto done = [this, job]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return done_.contains(job); };
    if (!mu_.AwaitWithTimeout(absl::Condition(&done), timeout)) return false;
    done_.erase(job);
    return true;
  }

 private:
  void Run(const Chunker& chunker) {
    FileChunker file_chunker(chunker, kFileOptions);
    for (;;) {
      std::shared_ptr<FileJob> job;
      {
        absl::MutexLock lock(&mu_);
        mu_.Await(absl::Condition(
            +[](FilePool* p)
                 ABSL_EXCLUSIVE_LOCKS_REQUIRED(p->mu_) { return !p->queue_.empty() || p->stop_; },
            this));
        if (queue_.empty()) return;
        job = std::move(queue_.front());
        queue_.pop_front();
      }
      work_(&file_chunker, job.get());
      absl::MutexLock lock(&mu_);
      done_.insert(job.get());
    }
  }

  std::function<void(FileChunker*, FileJob*)> work_;
  absl::Mutex mu_;
  std::deque<std::shared_ptr<FileJob>> queue_ ABSL_GUARDED_BY(mu_);
  std::unordered_set<const FileJob*> done_ ABSL_GUARDED_BY(mu_);
  bool stop_ ABSL_GUARDED_BY(mu_) = false;
  std::vector<std::thread> threads_;
};

// The files of one directory being read while the walk goes on: (index in the tree, job).
using PendingFiles = std::vector<std::pair<int, std::shared_ptr<FileJob>>>;

class Archiver {
 public:
  Archiver(Repository* repo, const BackupOptions& options,
           const std::function<void(const std::string&)>& on_error,
           const std::function<void(const BackupProgress&)>& on_progress)
      : repo_(repo),
        options_(options),
        on_error_(on_error),
        on_progress_(on_progress),
        chunker_(repo->config().chunker),
        uploader_(repo),
        pool_([this](FileChunker* fc, FileJob* job) { ReadFile(fc, job); }) {}

  // Saves the trie below "/" as the root tree; returns its fingerprint. `parent`: the parent
  // snapshot's root tree, read back from the repository, or null.
  absl::StatusOr<Fingerprint> SaveRoot(const PathTrie& trie, const LoadedTree* parent) {
    if (trie.target) {
      WHORL_ASSIGN_OR_RETURN(v1::Tree tree, SaveDirContents("/", Whole(parent)));
      return SaveTree(&tree, parent);
    }
    WHORL_ASSIGN_OR_RETURN(v1::Tree tree, SaveTrie("", trie, Whole(parent)));
    return SaveTree(&tree, parent);
  }

  absl::Status Finish() { return uploader_.Flush(); }

  // The counters as the snapshot's summary (data_added and duration are the caller's).
  v1::SnapshotSummary summary() const {
    v1::SnapshotSummary s;
    s.set_files_new(counts_.files_new);
    s.set_files_changed(counts_.files_changed);
    s.set_files_unmodified(counts_.files_unmodified);
    s.set_dirs_new(counts_.dirs_new);
    s.set_total_files_processed(counts_.total_files_processed);
    s.set_total_bytes_processed(counts_.total_bytes_processed);
    return s;
  }
  std::vector<std::string>& errors() { return errors_; }
  std::vector<std::string>& warnings() { return warnings_; }
  uint64_t data_added() const { return uploader_.data_added(); }

 private:
  void Error(const std::string& path, const absl::Status& status) {
    std::string msg = path + ": " + std::string(status.message());
    if (on_error_) on_error_(msg);
    errors_.push_back(std::move(msg));
  }

  bool Excluded(const std::string& path, const std::string& name) const {
    return IsExcluded(options_.excludes, path, name);
  }

  static const v1::Node* FindChild(const v1::Tree* tree, const std::string& name) {
    if (tree == nullptr) return nullptr;
    auto it =
        std::lower_bound(tree->nodes().begin(), tree->nodes().end(), name,
                         [](const v1::Node& n, const std::string& k) { return n.name() < k; });
    return (it != tree->nodes().end() && it->name() == name) ? &*it : nullptr;
  }

  // The walk will load the subtrees of a parent tree's directories: announce them together.
  void PrefetchSubtrees(const v1::Tree& tree) { repo_->Prefetch(SubtreeFingerprints(tree)); }

  static const v1::Tree* Whole(const LoadedTree* tree) {
    return tree == nullptr ? nullptr : &tree->tree;
  }

  // The parent's tree for a directory node, if it has one (a load failure only costs a re-read).
  std::shared_ptr<const LoadedTree> ParentSubtree(const v1::Node* parent_node) {
    if (parent_node == nullptr || parent_node->type() != v1::Node::DIR) return nullptr;
    if (absl::StatusOr<Fingerprint> fp = Fingerprint::FromBytes(parent_node->subtree()); fp.ok()) {
      if (auto it = preloaded_.find(*fp); it != preloaded_.end()) return it->second;
    }
    absl::StatusOr<LoadedTree> t = LoadStoredTree(repo_, parent_node->subtree());
    if (!t.ok()) return nullptr;
    PrefetchSubtrees(t->tree);
    return std::make_shared<const LoadedTree>(*std::move(t));
  }

 public:
  // For a repository whose reads cost a round trip: loads the parent snapshot's trees ahead of
  // the walk (PreloadTrees), up to kPreloadBytes of them.
  void PreloadParentTrees(const v1::Tree& root) {
    constexpr uint64_t kPreloadBytes = 16 << 20;
    PreloadTrees(
        repo_, root, kPreloadBytes, DecodeTree, [](const std::string&) { return true; },
        [this](const Fingerprint& fp, std::string, LoadedTree tree) {
          preloaded_.emplace(fp, std::make_shared<const LoadedTree>(std::move(tree)));
        },
        [](const Fingerprint&, std::string) {  // held by the deltas' LoadedTree
        });
  }

 private:
  // The distinct subtrees of a tree's directories.
  static std::vector<Fingerprint> SubtreeFingerprints(const v1::Tree& tree) {
    std::vector<Fingerprint> fps;
    for (const v1::Node& n : tree.nodes()) {
      if (n.type() != v1::Node::DIR) continue;
      if (auto fp = Fingerprint::FromBytes(n.subtree()); fp.ok()) fps.push_back(*fp);
    }
    std::sort(fps.begin(), fps.end());
    fps.erase(std::unique(fps.begin(), fps.end()), fps.end());
    return fps;
  }

  // `parent`: the parent snapshot's tree for this directory as read back from the repository,
  // or nullptr. In a repository that takes tree deltas, a changed directory whose parent tree
  // is known is stored as a delta against that tree's base (the parent itself if it is whole:
  // a delta's base is never a delta, so reading a tree costs at most two objects), when the
  // delta is under half the tree's bytes; else whole, becoming the base for the nights after.
  absl::StatusOr<Fingerprint> SaveTree(v1::Tree* tree, const LoadedTree* parent) {
    const std::string bytes = EncodeTree(tree);
    const Fingerprint fp = Sha256(bytes);
    if (parent != nullptr) {
      // The same directory as the parent's tree, which was just read back from the repository:
      // it is stored, so it needs no question to the index (an unchanged night asks about none
      // of its ~9k trees), as an unchanged file's chunks need none.
      const std::string_view fp_bytes(reinterpret_cast<const char*>(fp.bytes.data()),
                                      fp.bytes.size());
      const bool same = parent->base_id.empty()
                            ? parent->id == fp_bytes
                            : metadata::SerializeDeterministic(parent->tree) == bytes;
      if (same) return Fingerprint::FromBytes(parent->id);
      // Back to its base's entries: the base is stored (read back with the parent).
      if (parent->base_id == fp_bytes) return fp;
      if (repo_->config().tree_deltas()) {
        const bool whole = parent->base_id.empty();
        v1::Tree delta = MakeTreeDelta(whole ? parent->tree : *parent->base,
                                       whole ? parent->id : parent->base_id, *tree);
        std::string delta_bytes = EncodeTree(&delta);
        if (delta_bytes.size() * 2 < bytes.size()) {
          // The base was just read back too: it is stored before this delta.
          const Fingerprint delta_fp = Sha256(delta_bytes);
          WHORL_RETURN_IF_ERROR(uploader_.AddTree(delta_fp, delta_bytes));
          return delta_fp;
        }
      }
    }
    WHORL_RETURN_IF_ERROR(uploader_.AddTree(fp, bytes));
    return fp;
  }

  absl::StatusOr<v1::Tree> SaveTrie(const std::string& prefix, const PathTrie& trie,
                                    const v1::Tree* parent) {
    v1::Tree tree;
    PendingFiles pending;
    for (const auto& [name, child] : trie.children) {
      const std::string path = prefix + "/" + name;
      struct stat st;
      if (::lstat(path.c_str(), &st) != 0) {
        Error(path, ErrnoStatus("stat", path, errno));
        continue;
      }
      const v1::Node* parent_node = FindChild(parent, name);
      if (child.target) {
        WHORL_RETURN_IF_ERROR(SaveEntry(path, name, st, parent_node, &tree, &pending));
        continue;
      }
      if (!S_ISDIR(st.st_mode)) continue;  // a target below a non-directory cannot exist
      std::shared_ptr<const LoadedTree> parent_sub = ParentSubtree(parent_node);
      WHORL_ASSIGN_OR_RETURN(v1::Tree sub, SaveTrie(path, child, Whole(parent_sub.get())));
      v1::Node node = MetadataNode(name, st);
      WHORL_ASSIGN_OR_RETURN(Fingerprint fp, SaveTree(&sub, parent_sub.get()));
      node.set_subtree(fp.ToBytes());
      *tree.add_nodes() = std::move(node);
    }
    WHORL_RETURN_IF_ERROR(SaveWalkedDirs(0));  // they may point into `tree`
    WHORL_RETURN_IF_ERROR(Resolve(&tree, pending));
    return tree;
  }

  static v1::Node MetadataNode(const std::string& name, const struct stat& st) {
    v1::Node node;
    node.set_name(name);
    node.set_mode(st.st_mode & 07777);
    node.set_uid(st.st_uid);
    node.set_gid(st.st_gid);
    node.set_mtime_ns(Ns(st.st_mtim));
    node.set_ctime_ns(Ns(st.st_ctim));
    node.set_inode(st.st_ino);
    node.set_device(st.st_dev);
    node.set_links(static_cast<uint32_t>(st.st_nlink));
    if (S_ISDIR(st.st_mode))
      node.set_type(v1::Node::DIR);
    else if (S_ISREG(st.st_mode))
      node.set_type(v1::Node::FILE);
    else if (S_ISLNK(st.st_mode))
      node.set_type(v1::Node::SYMLINK);
    else if (S_ISFIFO(st.st_mode))
      node.set_type(v1::Node::FIFO);
    else if (S_ISCHR(st.st_mode))
      node.set_type(v1::Node::CHAR_DEVICE);
    else if (S_ISBLK(st.st_mode))
      node.set_type(v1::Node::BLOCK_DEVICE);
    else
      node.set_type(v1::Node::SOCKET);
    if (S_ISCHR(st.st_mode) || S_ISBLK(st.st_mode)) node.set_rdev(st.st_rdev);
    return node;
  }

  // Saves one filesystem entry into `tree`; a file to read goes to the pool and into `pending`.
  // An entry's own failure is recorded and skips it; a non-OK return is fatal.
  absl::Status SaveEntry(const std::string& path, const std::string& name, const struct stat& st,
                         const v1::Node* parent_node, v1::Tree* tree, PendingFiles* pending) {
    v1::Node node = MetadataNode(name, st);
    switch (node.type()) {
      case v1::Node::FILE:
        if (std::shared_ptr<FileJob> job = SaveFile(path, st, parent_node, &node)) {
          pending->emplace_back(tree->nodes_size(), std::move(job));
        }
        break;
      case v1::Node::DIR: {
        if (parent_node == nullptr || parent_node->type() != v1::Node::DIR) ++counts_.dirs_new;
        // The node goes in now; its subtree's fingerprint once the directory's tree is saved
        // (Defer).
        *tree->add_nodes() = std::move(node);
        auto dir = std::make_unique<WalkedDir>();
        dir->parent = ParentSubtree(parent_node);
        dir->up = tree;
        dir->up_index = tree->nodes_size() - 1;
        WHORL_RETURN_IF_ERROR(WalkDir(path, Whole(dir->parent.get()), &dir->tree, &dir->files));
        return Defer(std::move(dir));
      }
      case v1::Node::SYMLINK: {
        std::string target(static_cast<size_t>(st.st_size) + 1, '\0');
        const ssize_t n = ::readlink(path.c_str(), target.data(), target.size());
        if (n < 0) {
          Error(path, ErrnoStatus("readlink", path, errno));
          return absl::OkStatus();
        }
        target.resize(static_cast<size_t>(n));
        node.set_symlink_target(target);
        break;
      }
      default:
        break;
    }
    *tree->add_nodes() = std::move(node);
    return absl::OkStatus();
  }

  // Waits for the files of `tree` that the pool reads, in order, and puts their chunk lists in;
  // a file that failed is recorded and dropped from the tree.
  absl::Status Resolve(v1::Tree* tree, const PendingFiles& pending) {
    if (pending.empty()) return absl::OkStatus();
    std::vector<bool> failed(tree->nodes_size(), false);
    bool any_failed = false;
    for (const auto& [index, job] : pending) {
      while (!pool_.Wait(job.get(), absl::Milliseconds(250))) Progress(0);
      if (job->fatal) return job->status;
      for (std::string& w : job->warnings) {
        if (on_error_) on_error_("warning: " + w);
        warnings_.push_back(std::move(w));
      }
      if (!job->status.ok()) {
        Error(job->path, job->status);
        failed[index] = any_failed = true;
        continue;
      }
      *tree->mutable_nodes(index) = std::move(job->node);
      if (job->changed)
        ++counts_.files_changed;
      else
        ++counts_.files_new;
    }
    if (any_failed) {
      v1::Tree kept;
      for (int i = 0; i < tree->nodes_size(); ++i) {
        if (!failed[i]) *kept.add_nodes() = std::move(*tree->mutable_nodes(i));
      }
      tree->Swap(&kept);
    }
    return absl::OkStatus();
  }

  // Saves the directory `path` whole and returns its tree (not saved itself).
  absl::StatusOr<v1::Tree> SaveDirContents(const std::string& path, const v1::Tree* parent) {
    v1::Tree tree;
    PendingFiles pending;
    WHORL_RETURN_IF_ERROR(WalkDir(path, parent, &tree, &pending));
    WHORL_RETURN_IF_ERROR(SaveWalkedDirs(0));
    WHORL_RETURN_IF_ERROR(Resolve(&tree, pending));
    return tree;
  }

  // Walks the entries of directory `path` into `tree`: its files go to the pool (into
  // `pending`), its subdirectories are walked and deferred (Defer).
  absl::Status WalkDir(const std::string& path, const v1::Tree* parent, v1::Tree* tree,
                       PendingFiles* pending) {
    std::optional<std::vector<DirEntry>> listing;
    if (walk_ahead_ != nullptr) listing = walk_ahead_->Take(path);
    if (!listing.has_value()) {
      listing.emplace();
      unsigned long dev = 0;
      if (const int err = ReadListing(path, &*listing, &dev); err != 0) {
        Error(path, ErrnoStatus("open directory", path, err));
        return absl::OkStatus();
      }
      if (walk_ahead_ != nullptr) walk_ahead_->Walked(path, dev, *listing);
    }
    const std::string prefix = path == "/" ? "" : path;
    for (const DirEntry& entry : *listing) {
      const std::string& name = entry.name;
      const std::string child = prefix + "/" + name;
      if (Excluded(child, name)) continue;
      if (entry.err != 0) {
        Error(child, ErrnoStatus("stat", child, entry.err));
        continue;
      }
      const struct stat& st = entry.st;
      if (options_.one_file_system && S_ISDIR(st.st_mode) && root_dev_ != 0 &&
          st.st_dev != root_dev_) {
        continue;
      }
      WHORL_RETURN_IF_ERROR(SaveEntry(child, name, st, FindChild(parent, name), tree, pending));
      Progress(0);
    }
    return absl::OkStatus();
  }

  // A directory walked whose tree waits for its files to be read before it is saved.
  struct WalkedDir {
    v1::Tree tree;
    PendingFiles files;
    std::shared_ptr<const LoadedTree> parent;  // the parent snapshot's tree for it, or null
    v1::Tree* up = nullptr;                    // the tree holding its node
    int up_index = 0;                          // the node's index in `up`
  };

  // Queues a walked directory to be saved later, so that the walk goes on to the next
  // directories while the pool reads this one's files. Waiting for them before leaving each
  // directory kept as many reads in flight as a directory has files (2.2 on average in the
  // source tree): the pool's readers sat idle 40% of a cold first backup waiting for work.
  // Directories are saved in the order they were walked to the end, which is post-order: a
  // directory's subdirectories are saved (and their fingerprints set in its tree) before it.
  absl::Status Defer(std::unique_ptr<WalkedDir> dir) {
    walked_files_ += dir->files.size();
    walked_dirs_.push_back(std::move(dir));
    return SaveWalkedDirs(kMaxWalkedFiles);
  }

  // Saves the oldest walked directories until at most `max_files` of their files (and
  // kMaxWalkedDirs directories) wait; 0 saves them all.
  absl::Status SaveWalkedDirs(size_t max_files) {
    while (!walked_dirs_.empty() &&
           (max_files == 0 || walked_files_ > max_files || walked_dirs_.size() > kMaxWalkedDirs)) {
      std::unique_ptr<WalkedDir> dir = std::move(walked_dirs_.front());
      walked_dirs_.pop_front();
      walked_files_ -= dir->files.size();
      WHORL_RETURN_IF_ERROR(Resolve(&dir->tree, dir->files));
      WHORL_ASSIGN_OR_RETURN(Fingerprint fp, SaveTree(&dir->tree, dir->parent.get()));
      dir->up->mutable_nodes(dir->up_index)->set_subtree(fp.ToBytes());
    }
    return absl::OkStatus();
  }

  // Fills `node` from the parent snapshot when the file is unchanged (nullptr); otherwise hands
  // the file to the pool and returns its job.
  std::shared_ptr<FileJob> SaveFile(const std::string& path, const struct stat& st,
                                    const v1::Node* parent_node, v1::Node* node) {
    node->set_size(static_cast<uint64_t>(st.st_size));
    ++counts_.total_files_processed;
    counts_.total_bytes_processed += static_cast<uint64_t>(st.st_size);
    if (parent_node != nullptr && parent_node->type() == v1::Node::FILE &&
        parent_node->size() == node->size() && parent_node->mtime_ns() == node->mtime_ns() &&
        parent_node->ctime_ns() == node->ctime_ns() && parent_node->inode() == node->inode()) {
      *node->mutable_chunks() = parent_node->chunks();
      *node->mutable_chunk_lists() = parent_node->chunk_lists();
      ++counts_.files_unmodified;
      uploader_.Walked(static_cast<uint64_t>(st.st_size));
      read_bytes_.fetch_add(static_cast<uint64_t>(st.st_size), std::memory_order_relaxed);
      return nullptr;
    }
    auto job = std::make_shared<FileJob>();
    job->path = path;
    job->st = st;
    job->node = *node;
    job->changed = parent_node != nullptr;
    // A file read through the page cache (smaller than direct_min_size; bigger ones have a
    // read-ahead thread of their own, agent/file_reader.h) is read by a pool thread with one
    // read at a time, and a cold read left that thread waiting for the disk: 1.0-1.1 s of a
    // 2.4 s first backup of the tree, for each of the 4 threads. The walk runs ahead of the pool
    // (Defer), so it starts the reads: 2.28-2.42 -> 1.94-2.03 s (cold, side by side).
    if (st.st_size > 0 && static_cast<uint64_t>(st.st_size) < kFileOptions.direct_min_size) {
      job->fd = OpenAhead(path, st);
    }
    pool_.Submit(job, chunker_);
    return job;
  }

  // On a pool thread: reads, chunks and hashes one file and queues its chunks for upload.
  void ReadFile(FileChunker* file_chunker, FileJob* job) {
    if (stopping_.load(std::memory_order_relaxed)) {
      job->status = absl::CancelledError("backup stopped");
      return;
    }
    const std::string& path = job->path;
    int fd = std::exchange(job->fd, -1);
    if (fd < 0) fd = OpenToRead(path);
    if (fd < 0) {
      job->status = ErrnoStatus("open", path, errno);
      return;
    }
    // The chunk fingerprints are gathered as plain fingerprints and copied into the node at the
    // end (a string per chunk made as the file is read, between the pipeline's buffers,
    // fragmented the heap); a big file's go into chunk lists as it is read, each stored after
    // the chunks it names, so what is held does not grow with the file.
    const uint64_t file_size = static_cast<uint64_t>(job->st.st_size);
    const ChunkUploader::Kind kind = file_size >= kLargeFileBytes ? ChunkUploader::kLargeFile
                                     : file_size >= kFileOptions.direct_min_size
                                         ? ChunkUploader::kMediumFile
                                         : ChunkUploader::kSmallFile;
    ChunkListBuilder chunks(repo_->config().chunk_lists(),
                            [this](const Fingerprint& fp, std::string bytes) {
                              return uploader_.AddTree(fp, bytes, ChunkUploader::kChunkList);
                            });
    absl::StatusOr<uint64_t> size = file_chunker->Chunk(
        fd, path,
        [this, job, kind, &chunks](std::string_view chunk) {
          // As the bytes are read, not as the walk passes the file: the walk runs ahead of the
          // readers by a varying lead, which would close bundles early (kBundleSpanBytes).
          uploader_.Walked(chunk.size());
          const Fingerprint fp = ChunkSha256(chunk);
          if (absl::Status up = uploader_.Add(fp, chunk, kind); !up.ok()) {
            job->fatal = true;
            stopping_.store(true, std::memory_order_relaxed);
            return up;
          }
          if (absl::Status list = chunks.Add(fp); !list.ok()) {
            job->fatal = true;
            stopping_.store(true, std::memory_order_relaxed);
            return list;
          }
          return absl::OkStatus();
        },
        [this](uint64_t n) { read_bytes_.fetch_add(n, std::memory_order_relaxed); },
        job->st.st_size);
    if (!size.ok()) {
      job->status = size.status();
      ::close(fd);
      return;
    }
    v1::Node* node = &job->node;
    if (absl::Status list = chunks.Finish(node); !list.ok()) {
      job->status = list;
      job->fatal = true;
      ::close(fd);
      return;
    }
    node->set_size(*size);
    struct stat after;
    if (::fstat(fd, &after) == 0 &&
        (after.st_size != job->st.st_size || Ns(after.st_mtim) != Ns(job->st.st_mtim) ||
         static_cast<uint64_t>(after.st_size) != *size)) {
      job->warnings.push_back(path + ": file changed while it was read");
    }
    ::close(fd);
  }

  // Reports progress (from the walk's thread), at most every 250 ms.
  void Progress(uint64_t /*unused*/) {
    if (!on_progress_) return;
    const auto now = Clock::now();
    if (now - last_progress_ < std::chrono::milliseconds(250)) return;
    last_progress_ = now;
    progress_.bytes = read_bytes_.load(std::memory_order_relaxed);
    progress_.files = counts_.total_files_processed;
    if (totals_ != nullptr) {
      progress_.total_files = totals_->files.load(std::memory_order_relaxed);
      progress_.total_bytes = totals_->bytes.load(std::memory_order_relaxed);
      progress_.totals_done = totals_->done.load(std::memory_order_acquire);
    }
    on_progress_(progress_);
  }

 public:
  dev_t root_dev_ = 0;
  const ScanCounts* totals_ = nullptr;
  WalkAhead* walk_ahead_ = nullptr;  // listings read ahead, if any

 private:
  Repository* repo_;
  const BackupOptions& options_;
  std::function<void(const std::string&)> on_error_;
  std::function<void(const BackupProgress&)> on_progress_;
  Chunker chunker_;
  ChunkUploader uploader_;
  // Bytes read by the pool (and those of unchanged files), for the progress line.
  std::atomic<uint64_t> read_bytes_{0};
  // Set by a repository failure: jobs not yet started are skipped.
  std::atomic<bool> stopping_{false};
  // The parent snapshot's trees loaded ahead of the walk (PreloadParentTrees), by fingerprint.
  std::unordered_map<Fingerprint, std::shared_ptr<const LoadedTree>, FingerprintHash> preloaded_;
  struct Counts {
    uint64_t files_new = 0;
    uint64_t files_changed = 0;
    uint64_t files_unmodified = 0;
    uint64_t dirs_new = 0;
    uint64_t total_files_processed = 0;
    uint64_t total_bytes_processed = 0;
  } counts_;
  std::vector<std::string> errors_;
  std::vector<std::string> warnings_;
  BackupProgress progress_;
  Clock::time_point last_progress_{};
  // Walked directories waiting to be saved (Defer), oldest first, and their files.
  static constexpr size_t kMaxWalkedFiles = 1024;
  static constexpr size_t kMaxWalkedDirs = 1024;
  std::deque<std::unique_ptr<WalkedDir>> walked_dirs_;
  size_t walked_files_ = 0;
  FilePool pool_;  // last: its threads use the members above, so it stops first
};

// The newest snapshot of the same host and paths, if any.
absl::StatusOr<std::optional<metadata::SnapshotRecord>> FindParent(
    Repository* repo, const std::string& host, const std::vector<std::string>& paths) {
  WHORL_ASSIGN_OR_RETURN(std::vector<metadata::SnapshotRecord> snaps, repo->ListSnapshots());
  for (auto it = snaps.rbegin(); it != snaps.rend(); ++it) {
    const v1::Snapshot& s = it->snapshot;
    if (s.host() == host &&
        std::equal(s.paths().begin(), s.paths().end(), paths.begin(), paths.end())) {
      return *it;
    }
  }
  return std::nullopt;
}

int64_t NowNs() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

}  // namespace

std::string AbsolutePath(const std::string& path) {
  std::filesystem::path p(path);
  if (p.is_relative()) p = std::filesystem::current_path() / p;
  std::string s = p.lexically_normal().string();
  while (s.size() > 1 && s.back() == '/') s.pop_back();
  return s;
}

absl::StatusOr<BackupResult> RunBackup(
    Repository* repo, const BackupOptions& options,
    const std::function<void(const std::string&)>& on_error,
    const std::function<void(const BackupProgress&)>& on_progress) {
  const auto start = Clock::now();
  std::vector<std::string> paths;
  std::vector<std::string> missing;
  for (const std::string& p : options.paths) {
    const std::string abs = AbsolutePath(p);
    struct stat st;
    if (::lstat(abs.c_str(), &st) != 0) {
      missing.push_back(std::string(ErrnoStatus("stat", abs, errno).message()));
      continue;
    }
    paths.push_back(abs);
  }
  std::sort(paths.begin(), paths.end());
  paths.erase(std::unique(paths.begin(), paths.end()), paths.end());
  if (paths.empty()) {
    std::string msg = "no path to back up exists";
    for (const std::string& m : missing) msg += "; " + m;
    return absl::NotFoundError(msg);
  }

  PathTrie trie;
  for (const std::string& p : paths) {
    PathTrie* node = &trie;
    for (const auto& part : std::filesystem::path(p)) {
      const std::string name = part.string();
      if (name == "/" || name.empty()) continue;
      if (node->target) break;  // already covered by an ancestor target
      node = &node->children[name];
    }
    node->target = true;
    node->children.clear();  // a target covers everything below it
  }

  WHORL_ASSIGN_OR_RETURN(const uint64_t repair_generation, repo->RepairGeneration());
  std::optional<metadata::SnapshotRecord> parent;
  if (!options.force) {
    WHORL_ASSIGN_OR_RETURN(parent, FindParent(repo, options.host, paths));
    // A repair since the parent forgot chunks that its unchanged files may use: every file is
    // read, which stores those chunks again (once: this snapshot records the generation).
    if (parent.has_value() && parent->snapshot.repair_generation() < repair_generation) {
      parent.reset();
    }
  }
  std::unique_ptr<LoadedTree> parent_root;
  if (parent.has_value()) {
    absl::StatusOr<LoadedTree> t = LoadStoredTree(repo, parent->snapshot.root());
    if (t.ok()) parent_root = std::make_unique<LoadedTree>(*std::move(t));
  }

  Archiver archiver(repo, options, on_error, on_progress);
  if (parent_root != nullptr && repo->ReadsCostARoundTrip()) {
    archiver.PreloadParentTrees(parent_root->tree);
  }
  // Totals for the progress line come from a scan running alongside (only when someone shows
  // progress: it costs a second stat of every file).
  ScanCounts totals;
  std::thread scanner;
  if (on_progress) {
    archiver.totals_ = &totals;
    scanner = std::thread([&paths, &totals] { ScanTotals(paths, &totals); });
  }
  struct JoinScanner {
    ScanCounts* totals;
    std::thread* thread;
    ~JoinScanner() {
      totals->stop.store(true);
      if (thread->joinable()) thread->join();
    }
  } join_scanner{&totals, &scanner};
  for (const std::string& m : missing) {
    if (on_error) on_error(m);
    archiver.errors().push_back(m);
  }
  if (options.one_file_system) {
    struct stat st;
    if (::stat(paths.front().c_str(), &st) == 0) archiver.root_dev_ = st.st_dev;
  }
  // Warms the caches for the walk (an unchanged night is a walk and nothing else). A first
  // backup keeps fewer listings (walk_ahead.h kFirstBackupKeptEntries).
  const bool first = parent_root == nullptr;
  WalkAhead walk_ahead(
      paths,
      [&options](const std::string& path, const std::string& name) {
        return IsExcluded(options.excludes, path, name);
      },
      WalkAhead::kDefaultThreads,
      first ? WalkAhead::kFirstBackupKeptEntries : WalkAhead::kMaxKeptEntries);
  archiver.walk_ahead_ = &walk_ahead;
  WHORL_ASSIGN_OR_RETURN(Fingerprint root, archiver.SaveRoot(trie, parent_root.get()));
  // Every chunk and tree must be durable before the snapshot names them (invariant 2).
  WHORL_RETURN_IF_ERROR(archiver.Finish());
  WHORL_KILL_POINT("agent.commit.before");

  BackupResult result;
  v1::Snapshot& snap = result.snapshot;
  snap.set_repository_id(repo->config().id);
  snap.set_time_ns(NowNs());
  snap.set_host(options.host);
  for (const std::string& p : paths) snap.add_paths(p);
  for (const std::string& t : options.tags) snap.add_tags(t);
  snap.set_root(root.ToBytes());
  if (parent.has_value()) snap.set_parent(parent->id.ToBytes());
  snap.set_repair_generation(repair_generation);
  v1::SnapshotSummary summary = archiver.summary();
  summary.set_data_added(archiver.data_added());
  summary.set_errors(archiver.errors().size());
  summary.set_total_duration(std::chrono::duration<double>(Clock::now() - start).count());
  *snap.mutable_summary() = summary;
  WHORL_ASSIGN_OR_RETURN(result.id, repo->CommitSnapshot(snap));
  WHORL_KILL_POINT("agent.commit.after");
  result.errors = std::move(archiver.errors());
  result.warnings = std::move(archiver.warnings());
  return result;
}

}  // namespace whorl::agent
