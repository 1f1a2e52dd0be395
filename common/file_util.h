// Small POSIX file helpers with absl::Status errors that name the path and the errno text.
#ifndef WHORL_COMMON_FILE_UTIL_H_
#define WHORL_COMMON_FILE_UTIL_H_

#include <cstdint>
#include <span>
#include <string>
#include <string_view>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"

namespace whorl {

// Status for a failed system call: NOT_FOUND for ENOENT, PERMISSION_DENIED for EACCES/EPERM,
// RESOURCE_EXHAUSTED for ENOSPC/EDQUOT, else INTERNAL. Message: "<op> <path>: <strerror>".
absl::Status ErrnoStatus(std::string_view op, std::string_view path, int err);

// Reads a whole file; FAILED_PRECONDITION if it is larger than `max_size`.
absl::StatusOr<std::string> ReadFile(const std::string& path, size_t max_size);

// Writes `data` to `path` so that after return the file has either its old or its new content
// whatever crash follows: write a temporary file, fsync it, rename it over `path`, fsync the dir.
absl::Status WriteFileAtomic(const std::string& path, std::string_view data);

// fsyncs a directory, making renames and creations in it durable.
absl::Status SyncDir(const std::string& dir);

// Removes the empty write-ahead logs ("N.log" files of 0 bytes, N < `below`) of the RocksDB
// database in `dir`. Call it with the database open (RocksDB's LOCK held, so no other process
// uses them) and `below` its current WAL's number. Returns how many it removed.
// Why: Debian 12's RocksDB 7.8 creates a new WAL at every open and keeps an empty one until a
// memtable flush (fixed upstream in 8.3, "Delete empty WAL files on reopen"), so a store opened
// every night and written nothing to (the chunk locator after an unchanged night) gained a file
// per run, and every open read them all. An empty WAL holds no write, and whorl does not set
// track_and_verify_wals_in_manifest, so RocksDB does not miss it.
absl::StatusOr<int> RemoveEmptyWals(const std::string& dir, uint64_t below);

// Writes all of `data` at the fd's current position, retrying short writes and EINTR.
absl::Status WriteAll(int fd, std::string_view data, std::string_view path_for_errors);
// Writes `parts` one after the other at the fd's current position, with as few writev calls as
// IOV_MAX allows, retrying short writes and EINTR. On error some of them may have been written.
absl::Status WriteAllV(int fd, std::span<const std::string_view> parts,
                       std::string_view path_for_errors);

// Reads exactly `n` bytes at `offset` into `out`; DATA_LOSS if the file is shorter.
absl::Status PreadExact(int fd, uint64_t offset, size_t n, std::string* out,
                        std::string_view path_for_errors);
// The same into `n` bytes at `out` (which the read overwrites: no zero-filling first).
absl::Status PreadExact(int fd, uint64_t offset, size_t n, char* out,
                        std::string_view path_for_errors);

// OK if the filesystem holding `dir` has at least `need` + `reserve` bytes free for an
// unprivileged writer; RESOURCE_EXHAUSTED "No space left on device: DIR has F MiB free, ..."
// otherwise. Stores call it before a write so that the space their RocksDB needs (its WAL, a
// memtable flush) is never the space that runs out: see WriteLatch for why.
absl::Status CheckFreeSpace(const std::string& dir, uint64_t need, uint64_t reserve);

// The first failed write of a RocksDB database, after which the store takes no more writes
// until it is reopened. Debian 12's RocksDB 7.8 is built with assertions, and a write to a WAL
// that failed once (a full disk) aborts the process (fixed upstream in 9.x, "Don't write to WAL
// after previous WAL write error"). Reads go on. Thread-safe.
class WriteLatch {
 public:
  explicit WriteLatch(std::string store) : store_(std::move(store)) {}
  // OK, or FAILED_PRECONDITION naming the failed write and saying to reopen the store.
  absl::Status Check() const;
  // Records `s` if it is the first failure; returns `s`.
  absl::Status Note(absl::Status s);

 private:
  const std::string store_;
  mutable absl::Mutex mu_;
  absl::Status failed_ ABSL_GUARDED_BY(mu_);
};

}  // namespace whorl

#endif  // WHORL_COMMON_FILE_UTIL_H_
