#include "agent/restore.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <filesystem>
#include <map>
#include <memory>
#include <optional>
#include <system_error>
#include <thread>
#include <utility>

#include "absl/synchronization/mutex.h"
#include "agent/check.h"
#include "agent/objects.h"
#include "common/file_util.h"
#include "common/status_macros.h"

namespace whorl::agent {
namespace {

constexpr int kMaxDepth = 512;
// Files at least this big get their blocks allocated before they are written (WriteChunks).
constexpr uint64_t kPreallocateMinBytes = 1 << 20;

struct timespec Timespec(int64_t ns) {
  struct timespec ts;
  ts.tv_sec = ns / 1000000000;
  ts.tv_nsec = ns % 1000000000;
  if (ts.tv_nsec < 0) {
    ts.tv_nsec += 1000000000;
    --ts.tv_sec;
  }
  return ts;
}

// The order of the entry being restored on this thread: errors are reported in walk order
// whichever thread met them.
thread_local uint64_t current_entry = 0;

// Restores one snapshot; thread-compatible.
//
// The calling thread walks the trees, creates directories, links, symlinks and special files,
// and hands each regular file to one of kWriters threads, which create and write it (the
// per-file system calls then run on both cores, beside the read-ahead's decompression and
// hashing). A directory's own mode and times are set once its walk and every file in it are
// done, by whichever thread finishes last, so a read-only directory is never closed to its own
// files and file creation does not disturb its restored mtime.
class Restorer {
 public:
  // Four: a writer waits for the disk (a pack read on a cold cache, a new inode) while the
  // others decode, check and write.
  static constexpr size_t kWriters = 4;
  static constexpr size_t kMaxQueuedFiles = 64;

  Restorer(Repository* repo, const RestoreOptions& options,
           const std::function<void(const std::string&)>& on_error)
      : repo_(repo),
        options_(options),
        on_error_(on_error),
        euid_(::geteuid()),
        is_root_(euid_ == 0),
        egid_(::getegid()),
        umask_(ProcessUmask()) {}
  ~Restorer() { StopWriters(); }

  absl::StatusOr<RestoreResult> Run(const v1::Snapshot& snapshot) {
    std::error_code ec;
    std::filesystem::create_directories(options_.target, ec);
    target_fd_ = ::open(options_.target.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (target_fd_ < 0) {
      return absl::FailedPreconditionError("target " + options_.target +
                                           " is not a usable directory: " + std::strerror(errno));
    }
    struct stat target_st;
    // A setgid target gives what is created in it its group, and its new directories the bit.
    const bool target_gives_egid =
        ::fstat(target_fd_, &target_st) == 0 && (target_st.st_mode & S_ISGID) == 0;
    absl::StatusOr<v1::Tree> root = LoadRawTree(snapshot.root());
    if (!root.ok()) {
      ::close(target_fd_);
      return Annotate(root.status(), "snapshot root");
    }
    if (repo_->ReadsCostARoundTrip()) {
      // Trees ahead of the walk: a round of reads per level, not a round trip per directory.
      // What a hostile tree holds is checked entry by entry as the walk meets it.
      constexpr uint64_t kPreloadBytes = 16 << 20;
      PreloadTrees(
          repo_, *root, kPreloadBytes, ParseRawTree,
          [this](const std::string& path) { return Selected(path) || LeadsToInclude(path); },
          [this](const Fingerprint& fp, std::string bytes, LoadedTree) {
            preloaded_.emplace(fp, std::move(bytes));  // 3-4x smaller than parsed
          },
          [this](const Fingerprint& fp, std::string bytes) {
            preloaded_.emplace(fp, std::move(bytes));
          });
    }
    for (size_t i = 0; i < kWriters; ++i) writers_.emplace_back([this] { RunWriter(); });
    ancestors_.push_back(snapshot.root());
    auto* top = new DirState{target_fd_, "", nullptr, nullptr, 1};
    top->gives_egid = target_gives_egid;
    RestoreDir(top, *root, 0);
    Release(top);
    StopWriters();
    repo_->ForgetPrefetched();  // what a failed file left announced
    ::close(target_fd_);
    absl::MutexLock lock(&mu_);
    std::stable_sort(errors_.begin(), errors_.end(),
                     [](const auto& a, const auto& b) { return a.first < b.first; });
    for (auto& e : errors_) result_.errors.push_back(std::move(e.second));
    return std::move(result_);
  }

 private:
  // Messages show names with unprintable bytes escaped: a hostile name must not be able to
  // write control sequences to the operator's terminal.
  void Error(const std::string& path, std::string_view what) {
    std::string msg = PrintableName(path) + ": " + std::string(what);
    absl::MutexLock lock(&mu_);
    if (on_error_) on_error_(msg);
    errors_.emplace_back(current_entry, std::move(msg));
  }
  void Refuse(const std::string& path, std::string_view why) {
    {
      absl::MutexLock lock(&mu_);
      ++result_.refused;
    }
    Error(path, "refused: " + std::string(why));
  }

  // A directory being restored. `pending` counts its walk (until RestoreDir returns), its
  // queued or running file jobs and its unfinished subdirectories; at zero its mode and times
  // are set and its fd closed (the target's own, with no node, is left to Run).
  struct DirState {
    int fd;
    std::string path;
    std::unique_ptr<v1::Node> node;  // without its chunk list; null for the target
    DirState* parent;
    int pending;
    bool owner_set = false;  // made by this restore with the owner its node wants
    bool mode_set = false;   // made by this restore with the mode its node wants
    // Made by this restore (mkdirat succeeded), so empty but for what it put there: a leaf
    // needs no unlinkat of an existing entry first (duplicate names are refused before), which
    // saves a lookup and a turn on the directory's lock per file. Should another process add
    // an entry meanwhile, the O_EXCL create fails and the entry is reported.
    bool fresh = false;
    // What is created in it gets the restore's effective group: it is not setgid (made by this
    // restore, whose modes are set only once its entries are done, under a directory that
    // gives that group too; or the target, not setgid).
    bool gives_egid = false;
  };
  void Acquire(DirState* dir) {
    absl::MutexLock lock(&mu_);
    ++dir->pending;
  }
  void Release(DirState* dir) {
    while (dir != nullptr) {
      {
        absl::MutexLock lock(&mu_);
        if (--dir->pending > 0) return;
      }
      DirState* parent = dir->parent;
      if (dir->node != nullptr) {
        SetMetadata(dir->fd, dir->path, *dir->node, dir->owner_set, dir->mode_set);
        ::close(dir->fd);
      }
      delete dir;
      dir = parent;
    }
  }

  // A regular file for a writer thread.
  struct FileJob {
    DirState* dir;
    std::string path;
    v1::Node node;
    uint64_t entry;
  };
  void Submit(FileJob job) {
    Acquire(job.dir);
    absl::MutexLock lock(&mu_);
    mu_.Await(absl::Condition(
        +[](Restorer* r)
             ABSL_EXCLUSIVE_LOCKS_REQUIRED(r->mu_) { return r->jobs_.size() < kMaxQueuedFiles; },
        this));
    jobs_.push_back(std::move(job));
  }
  void RunWriter() {
    for (;;) {
      FileJob job;
      {
        absl::MutexLock lock(&mu_);
        mu_.Await(absl::Condition(
            +[](Restorer* r)
                 ABSL_EXCLUSIVE_LOCKS_REQUIRED(r->mu_) { return !r->jobs_.empty() || r->stop_; },
            this));
        if (jobs_.empty()) return;
        job = std::move(jobs_.front());
        jobs_.pop_front();
      }
      current_entry = job.entry;
      RestoreFile(job.dir, job.path, job.node);
      Release(job.dir);
    }
  }
  void StopWriters() {
    {
      absl::MutexLock lock(&mu_);
      stop_ = true;
    }
    for (std::thread& t : writers_) t.join();
    writers_.clear();
  }

  // A tree's entries as stored, without DecodeTree's whole-tree checks: each entry is checked
  // on its own in RestoreDir, so one hostile entry costs only itself.
  // A delta is applied to its base, its own fields checked as DecodeTree checks them (a base
  // that is a delta too is refused).
  absl::StatusOr<v1::Tree> LoadRawTree(std::string_view fp_bytes) {
    WHORL_ASSIGN_OR_RETURN(Fingerprint fp, Fingerprint::FromBytes(fp_bytes));
    WHORL_ASSIGN_OR_RETURN(v1::Tree tree, ReadRawTree(fp));
    if (!IsTreeDelta(tree)) return tree;
    if (absl::Status s = ValidateTreeDelta(tree); !s.ok()) {
      return Annotate(s, "tree " + fp.ToHex());
    }
    const Fingerprint base_fp = *Fingerprint::FromBytes(tree.base());
    absl::StatusOr<v1::Tree> base = ReadRawTree(base_fp);
    if (!base.ok()) {
      return absl::DataLossError("tree " + fp.ToHex() + ": base " + base_fp.ToHex() + ": " +
                                 std::string(base.status().message()));
    }
    absl::StatusOr<v1::Tree> whole = ApplyTreeDelta(*base, tree);
    if (!whole.ok()) return Annotate(whole.status(), "tree " + fp.ToHex());
    return whole;
  }
  // A tree object's bytes, parsed.
  absl::StatusOr<v1::Tree> ReadRawTree(const Fingerprint& fp) {
    // Preloaded trees stay until the end (16 MiB at most): a tree used at several places (every
    // empty directory has the same) is not fetched again.
    std::string fetched;
    const std::string* bytes = &fetched;
    if (auto it = preloaded_.find(fp); it != preloaded_.end()) {
      bytes = &it->second;
    } else {
      absl::StatusOr<std::string> read = ReadChunkRetrying(repo_, fp, kReadAttempts);
      if (!read.ok()) return read.status();
      fetched = *std::move(read);
    }
    absl::StatusOr<v1::Tree> tree = ParseRawTree(*bytes);
    if (!tree.ok()) return absl::DataLossError("tree " + fp.ToHex() + " does not parse");
    return tree;
  }
  static absl::StatusOr<v1::Tree> ParseRawTree(std::string_view bytes) {
    v1::Tree tree;
    if (!tree.ParseFromArray(bytes.data(), static_cast<int>(bytes.size()))) {
      return absl::DataLossError("does not parse");
    }
    return tree;
  }

  // Whether `path` lies in an included subtree, or leads to one.
  bool Selected(const std::string& path) const {
    if (options_.includes.empty()) return true;
    for (const std::string& inc : options_.includes) {
      if (path == inc || (path.size() > inc.size() && path.compare(0, inc.size(), inc) == 0 &&
                          path[inc.size()] == '/')) {
        return true;
      }
    }
    return false;
  }
  bool LeadsToInclude(const std::string& path) const {
    for (const std::string& inc : options_.includes) {
      if (inc.size() > path.size() && inc.compare(0, path.size(), path) == 0 &&
          inc[path.size()] == '/') {
        return true;
      }
    }
    return false;
  }

  // The entries of `tree` that may be restored: an entry with an unsafe name ("", ".", "..",
  // '/' or NUL in it), an unknown type or a malformed fingerprint is refused, and so is every
  // entry of a name that occurs twice (which of them is meant cannot be known: a symlink
  // `evil -> /etc` next to a directory `evil` holding `passwd` must restore neither).
  std::vector<const v1::Node*> SafeEntries(const std::string& path, const v1::Tree& tree) {
    std::map<std::string_view, int> count;
    for (const v1::Node& node : tree.nodes()) ++count[node.name()];
    std::vector<const v1::Node*> out;
    for (const v1::Node& node : tree.nodes()) {
      const std::string child = path + "/" + node.name();
      if (const absl::Status s = ValidateNode(node); !s.ok()) {
        Refuse(child, std::string(s.message()));
      } else if (const int n = count[node.name()]; n > 1) {
        Refuse(child, std::to_string(n) + " entries of this name in one directory");
      } else {
        out.push_back(&node);
      }
    }
    return out;
  }

  void RestoreDir(DirState* dir, const v1::Tree& tree, int depth) {
    const std::string& path = dir->path;
    if (depth > kMaxDepth) {
      Refuse(path, "trees nested deeper than " + std::to_string(kMaxDepth));
      return;
    }
    const std::vector<const v1::Node*> entries = SafeEntries(path, tree);
    Prefetch(path, entries);
    for (const v1::Node* node : entries) {
      current_entry = ++entries_seen_;
      const std::string child = path + "/" + node->name();
      const bool selected = Selected(child);
      if (!selected && !LeadsToInclude(child)) continue;
      if (node->type() == v1::Node::DIR) {
        RestoreSubdir(dir, child, *node, depth);
      } else if (selected) {
        RestoreLeaf(dir, child, *node);
      }
    }
  }

  // Announces the subtrees and file chunks this directory will read (up to kPrefetchBytes of
  // file data), so that a remote repository fetches them in a few round trips. A local one
  // reads a chunk for what a read-ahead worker's read costs: the writers read their files'
  // chunks themselves, which spares a hand-over per chunk (a copy, a hash-table entry, a
  // wake-up). Measured on the source tree's cold restore, alternating: 1.58-1.98 s with the
  // read-ahead, 1.32-1.58 s without (with the four writers and the trim threshold of
  // CmdRestore). A big file's chunk lists are still announced (WriteChunks): one file's chunks
  // are then decoded and checked ahead of its writer, on the read-ahead's threads.
  void Prefetch(const std::string& path, const std::vector<const v1::Node*>& entries) {
    if (!repo_->ReadsCostARoundTrip()) return;
    constexpr uint64_t kPrefetchBytes = 64 << 20;
    std::vector<Fingerprint> fps;
    uint64_t bytes = 0;
    for (const v1::Node* entry : entries) {
      const v1::Node& node = *entry;
      const std::string child = path + "/" + node.name();
      if (node.type() == v1::Node::DIR && (Selected(child) || LeadsToInclude(child))) {
        auto fp = Fingerprint::FromBytes(node.subtree());
        if (fp.ok() && !preloaded_.contains(*fp)) fps.push_back(*fp);
      } else if (node.type() == v1::Node::FILE && Selected(child) && bytes < kPrefetchBytes) {
        bytes += std::min<uint64_t>(node.size(), kPrefetchBytes);  // a hostile size may wrap
        for (const std::string& id : node.chunks()) {
          if (auto fp = Fingerprint::FromBytes(id); fp.ok()) fps.push_back(*fp);
        }
        // A big file's lists; WriteChunks announces their chunks as it reads each.
        for (const std::string& id : node.chunk_lists()) {
          if (auto fp = Fingerprint::FromBytes(id); fp.ok()) fps.push_back(*fp);
        }
      }
    }
    repo_->Prefetch(fps);
  }

  void RestoreSubdir(DirState* parent, const std::string& path, const v1::Node& node, int depth) {
    const int dirfd = parent->fd;
    const char* name = node.name().c_str();
    // 0700 until its entries are done, or its own mode at once where that is as safe
    // (CreatesDirWithMode): a chmod less per directory.
    // Not in a setgid directory, whose new subdirectories inherit the bit (a chmod clears it).
    const bool mode_at_mkdir = parent->gives_egid && CreatesDirWithMode(node.mode());
    const bool fresh = ::mkdirat(dirfd, name, mode_at_mkdir ? (node.mode() & 0777) : 0700) == 0;
    if (!fresh && errno != EEXIST) {
      Error(path, std::strerror(errno));
      return;
    }
    // O_NOFOLLOW: an existing symlink here (placed by anyone) is refused, never followed.
    const int fd = ::openat(dirfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0) {
      Error(path, errno == ELOOP || errno == ENOTDIR
                      ? "exists in the target and is not a directory (a symlink is never followed)"
                      : std::strerror(errno));
      return;
    }
    auto meta = std::make_unique<v1::Node>(node);
    meta->clear_chunks();
    Acquire(parent);
    auto* dir = new DirState{fd, path, std::move(meta), parent, 1};
    dir->fresh = fresh;
    dir->gives_egid = fresh && parent->gives_egid;
    dir->owner_set = fresh && OwnedAsIs(parent, node);
    dir->mode_set = fresh && mode_at_mkdir;
    if (std::find(ancestors_.begin(), ancestors_.end(), node.subtree()) != ancestors_.end()) {
      // Impossible with SHA-256 addressing, unless the repository itself lies.
      Refuse(path, "directory refers to a tree that contains it (a cycle)");
    } else if (absl::StatusOr<v1::Tree> sub = LoadRawTree(node.subtree()); sub.ok()) {
      ancestors_.push_back(node.subtree());
      RestoreDir(dir, *sub, depth + 1);
      ancestors_.pop_back();
    } else {
      Error(path, std::string(sub.status().message()));
    }
    Release(dir);  // its metadata is set once its files are written
  }

  void RestoreLeaf(DirState* dir, const std::string& path, const v1::Node& node) {
    const int dirfd = dir->fd;
    const char* name = node.name().c_str();
    // Replace whatever non-directory is there; unlinkat never follows a symlink.
    if (!dir->fresh && ::unlinkat(dirfd, name, 0) != 0 && errno != ENOENT) {
      Error(path, std::string("cannot replace existing entry: ") + std::strerror(errno));
      return;
    }
    switch (node.type()) {
      case v1::Node::FILE:
        if (node.links() > 1) {
          // Hard-link groups stay on this thread: a later link needs the first file written.
          RestoreFile(dir, path, node);
        } else {
          Submit(FileJob{dir, path, node, current_entry});
        }
        return;
      case v1::Node::SYMLINK:
        if (::symlinkat(node.symlink_target().c_str(), dirfd, name) != 0) {
          Error(path, std::strerror(errno));
          return;
        }
        if (is_root_) {
          ::fchownat(dirfd, name, node.uid(), node.gid(), AT_SYMLINK_NOFOLLOW);  // best effort
        }
        SetTimesAt(dirfd, path, node);
        return;
      case v1::Node::FIFO:
        if (::mkfifoat(dirfd, name, node.mode() & 07777) != 0) {
          Error(path, std::strerror(errno));
          return;
        }
        break;
      case v1::Node::CHAR_DEVICE:
      case v1::Node::BLOCK_DEVICE: {
        // A device node in the target is a door to the hardware for whoever can open it, so it
        // is restored only when asked for (--devices) and only by root.
        if (!options_.devices) {
          Refuse(path, "device node (restore with --devices, as root, to create it)");
          return;
        }
        if (!is_root_) {
          Refuse(path, "device node needs root");
          return;
        }
        const mode_t type = node.type() == v1::Node::CHAR_DEVICE ? S_IFCHR : S_IFBLK;
        if (::mknodat(dirfd, name, type | (node.mode() & 07777), node.rdev()) != 0) {
          Error(path, std::strerror(errno));
          return;
        }
        break;
      }
      default:
        return;  // sockets are not restored (as tar and restic do)
    }
    // By name, never by opening: opening a device or a FIFO can block or act on hardware.
    if (is_root_ && ::fchownat(dirfd, name, node.uid(), node.gid(), AT_SYMLINK_NOFOLLOW) != 0) {
      Error(path, std::string("chown: ") + std::strerror(errno));
    }
    if (::fchmodat(dirfd, name, node.mode() & 07777, AT_SYMLINK_NOFOLLOW) != 0) {
      Error(path, std::string("chmod: ") + std::strerror(errno));
    }
    SetTimesAt(dirfd, path, node);
  }

  void RestoreFile(DirState* dir, const std::string& path, const v1::Node& node) {
    const int dirfd = dir->fd;
    const char* name = node.name().c_str();
    const auto link_key = std::make_pair(node.device(), node.inode());
    if (node.links() > 1) {
      auto it = hardlinks_.find(link_key);
      if (it != hardlinks_.end()) {
        RestoreHardLink(dirfd, path, name, it->second);
        return;
      }
    }
    // Created with its mode when the umask leaves that mode whole (no setuid, setgid or sticky
    // bit, which chown would clear): a chmod less per file. Otherwise 0600 until chmod.
    const bool mode_set = CreatesWithMode(node.mode());
    const int fd = ::openat(dirfd, name, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC,
                            mode_set ? (node.mode() & 0777) : 0600);
    if (fd < 0) {
      Error(path, std::strerror(errno));
      return;
    }
    absl::Status s = WriteChunks(fd, path, node);
    if (!s.ok()) {
      ::close(fd);
      ::unlinkat(dirfd, name, 0);  // never leave a file that looks whole but is not
      Error(path, std::string(s.message()));
      return;
    }
    SetMetadata(fd, path, node, OwnedAsIs(dir, node), mode_set);
    struct stat st;
    if (node.links() > 1 && ::fstat(fd, &st) == 0) {
      hardlinks_[link_key] = LinkSource{path.substr(1), st.st_dev, st.st_ino};
    }
    ::close(fd);
    absl::MutexLock lock(&mu_);
    ++result_.files;
    result_.bytes += node.size();
  }

  // Links `name` to the file restored first for this hard-link group. linkat resolves the
  // source path from the target; should a directory on it have been swapped for a symlink
  // since, the link would reach some other file: the new entry's inode is compared with the
  // one restore wrote, and a link to anything else is removed and reported.
  struct LinkSource {
    std::string relpath;  // relative to the target
    dev_t dev;
    ino_t ino;
  };
  void RestoreHardLink(int dirfd, const std::string& path, const char* name,
                       const LinkSource& src) {
    if (::linkat(target_fd_, src.relpath.c_str(), dirfd, name, 0) != 0) {
      Error(path, std::string("hard link: ") + std::strerror(errno));
      return;
    }
    struct stat st;
    if (::fstatat(dirfd, name, &st, AT_SYMLINK_NOFOLLOW) != 0 || st.st_dev != src.dev ||
        st.st_ino != src.ino) {
      ::unlinkat(dirfd, name, 0);
      Refuse(path, "hard link source /" + src.relpath + " changed during the restore");
    }
  }

  // Writes through the page cache, as restic and borg do. (Sessions 4-10 wrote files of 1 MiB
  // and more with O_DIRECT; on this VM in session 11 that made a cold 1 GiB image restore
  // slower, 1.23-1.43 s against 1.01-1.20 s, the disk write then being inside the restore.)
  absl::Status WriteChunks(int fd, const std::string& path, const v1::Node& node) {
    if (node.size() >= kPreallocateMinBytes) {
      // Its blocks allocated in one call, not page by page as the writes dirty them (ext4's
      // delayed allocation: a reservation and an extent-tree lookup per page). Writing 1 GiB in
      // 64 KiB writes on this VM: 0.27-0.34 s of system CPU against 0.40-0.46 s, three rounds
      // of each; restic preallocates too. KEEP_SIZE: the size grows only as bytes are written,
      // so a restore killed midway leaves a short file, not one of zeros that looks whole. A
      // filesystem without fallocate, or a size that does not fit (a write then fails with
      // ENOSPC, as before), changes nothing.
      (void)::fallocate(fd, FALLOC_FL_KEEP_SIZE, 0, static_cast<off_t>(node.size()));
    }
    uint64_t written = 0;
    // False once the chunks hold more than the node's size. The chunk's bytes are written
    // where the repository holds them (a local one: in the bundle it decoded), not copied out.
    auto write = [&](const Fingerprint& fp) -> absl::StatusOr<bool> {
      bool read = false;
      bool more = true;
      const absl::Status s =
          ReadChunkRetrying(repo_, fp, kReadAttempts, [&](std::string_view data) {
            read = true;
            written += data.size();
            // A hostile chunk list: stop writing at once.
            if (written > node.size()) more = false;
            return more ? WriteAll(fd, data, path) : absl::OkStatus();
          });
      if (!s.ok()) return read ? s : Annotate(s, "chunk " + fp.ToHex());
      return more;
    };
    bool more = true;
    for (int i = 0; more && i < node.chunks_size(); ++i) {
      WHORL_ASSIGN_OR_RETURN(Fingerprint fp, Fingerprint::FromBytes(node.chunks(i)));
      WHORL_ASSIGN_OR_RETURN(more, write(fp));
    }
    for (int i = 0; more && i < node.chunk_lists_size(); ++i) {
      WHORL_ASSIGN_OR_RETURN(Fingerprint list_fp, Fingerprint::FromBytes(node.chunk_lists(i)));
      absl::StatusOr<std::string> list = ReadChunkRetrying(repo_, list_fp, kReadAttempts);
      if (!list.ok()) return Annotate(list.status(), "chunk list " + list_fp.ToHex());
      absl::StatusOr<std::vector<Fingerprint>> chunks = DecodeChunkList(*list);
      if (!chunks.ok()) return Annotate(chunks.status(), "chunk list " + list_fp.ToHex());
      repo_->Prefetch(*chunks);
      for (size_t k = 0; more && k < chunks->size(); ++k) {
        WHORL_ASSIGN_OR_RETURN(more, write((*chunks)[k]));
      }
    }
    if (written != node.size()) {
      return absl::DataLossError(
          "chunks hold " + std::string(written > node.size() ? "over " : "") +
          std::to_string(written) + " bytes, the tree says " + std::to_string(node.size()));
    }
    return absl::OkStatus();
  }

  // Whether an entry created in `dir` already has the owner `node` asks for: the restore's
  // effective user and group (a chown would change nothing but the ctime, one system call and
  // one inode update per file when root restores root's files).
  bool OwnedAsIs(const DirState* dir, const v1::Node& node) const {
    return dir->gives_egid && node.uid() == euid_ && node.gid() == egid_;
  }
  // Whether creating with `mode` gives exactly `mode`: no bit the umask clears, no setuid,
  // setgid or sticky bit.
  bool CreatesWithMode(uint32_t mode) const {
    return umask_.has_value() && (mode & 07000) == 0 && (mode & 0777 & *umask_) == 0;
  }
  // Whether a directory may be made with its own mode rather than 0700 until its entries are
  // done: creating gives exactly that mode (CreatesWithMode: no special bit, nothing the umask
  // clears), the owner may write into it and search it (so its entries can be made), and no
  // one else may write into it (who could otherwise add entries while it is filled; reading
  // it early shows only what its final mode shows). 0755 and 0700 qualify, 0555 and 0775 do
  // not. The source tree's restore (9k directories): 9k fchmod calls less, its time the same
  // within this VM's noise (1.33-1.41 s against 1.34-1.45 s, cold, alternating).
  bool CreatesDirWithMode(uint32_t mode) const {
    return CreatesWithMode(mode) && (mode & 0700) == 0700 && (mode & 0022) == 0;
  }
  // The process's umask from /proc/self/status (umask(2) can only read it by changing it,
  // which other threads would see); nullopt where the kernel does not say.
  static std::optional<mode_t> ProcessUmask() {
    std::FILE* f = std::fopen("/proc/self/status", "re");
    if (f == nullptr) return std::nullopt;
    std::optional<mode_t> out;
    char line[256];
    unsigned int value = 0;
    while (std::fgets(line, sizeof(line), f) != nullptr) {
      if (std::sscanf(line, "Umask: %o", &value) == 1) {
        out = static_cast<mode_t>(value & 0777);
        break;
      }
    }
    std::fclose(f);
    return out;
  }

  // Owner first: chown clears setuid/setgid, so the mode comes after it; times last. Either is
  // skipped when the entry was created with it.
  void SetMetadata(int fd, const std::string& path, const v1::Node& node, bool owner_set,
                   bool mode_set) {
    if (is_root_ && !owner_set && ::fchown(fd, node.uid(), node.gid()) != 0) {
      Error(path, std::string("chown: ") + std::strerror(errno));
    }
    if (!mode_set && ::fchmod(fd, node.mode() & 07777) != 0) {
      Error(path, std::string("chmod: ") + std::strerror(errno));
    }
    const struct timespec times[2] = {Timespec(node.mtime_ns()), Timespec(node.mtime_ns())};
    if (::futimens(fd, times) != 0) Error(path, std::string("utimes: ") + std::strerror(errno));
  }

  void SetTimesAt(int dirfd, const std::string& path, const v1::Node& node) {
    const struct timespec times[2] = {Timespec(node.mtime_ns()), Timespec(node.mtime_ns())};
    if (::utimensat(dirfd, node.name().c_str(), times, AT_SYMLINK_NOFOLLOW) != 0) {
      Error(path, std::string("utimes: ") + std::strerror(errno));
    }
  }

  Repository* repo_;
  const RestoreOptions& options_;
  std::function<void(const std::string&)> on_error_;
  const uid_t euid_;
  const bool is_root_;  // euid_ == 0
  const gid_t egid_;
  const std::optional<mode_t> umask_;
  int target_fd_ = -1;
  // The walking thread's own: hard links and the walk's position.
  // (device, inode) of a multiply-linked file -> its restored path relative to the target.
  std::map<std::pair<uint64_t, uint64_t>, LinkSource> hardlinks_;
  // Fingerprints of the trees from the root down to the directory being restored.
  std::vector<std::string> ancestors_;
  // Trees loaded ahead of the walk from a remote repository (PreloadTrees), kept to the end.
  std::unordered_map<Fingerprint, std::string, FingerprintHash> preloaded_;
  uint64_t entries_seen_ = 0;

  absl::Mutex mu_;
  RestoreResult result_ ABSL_GUARDED_BY(mu_);
  std::vector<std::pair<uint64_t, std::string>> errors_ ABSL_GUARDED_BY(mu_);  // (entry, message)
  std::deque<FileJob> jobs_ ABSL_GUARDED_BY(mu_);
  bool stop_ ABSL_GUARDED_BY(mu_) = false;
  std::vector<std::thread> writers_;
};

}  // namespace

absl::StatusOr<RestoreResult> RunRestore(Repository* repo, const v1::Snapshot& snapshot,
                                         const RestoreOptions& options,
                                         const std::function<void(const std::string&)>& on_error) {
  Restorer restorer(repo, options, on_error);
  return restorer.Run(snapshot);
}

}  // namespace whorl::agent
