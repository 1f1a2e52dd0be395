// Backup: walks the given paths, stores new chunks and trees, and commits a snapshot whose root
// tree mirrors the absolute paths (backing up /home/x gives root -> home -> x).
//
// A file whose size, mtime, ctime and inode match the parent snapshot (the newest snapshot of
// the same host and the same paths) is not read: its chunk list is reused. Unless a repair
// forgot chunks since that snapshot was made (Repository::RepairGeneration): then every file
// is read, so that what the repair forgot is stored again.
#ifndef WHORL_AGENT_BACKUP_H_
#define WHORL_AGENT_BACKUP_H_

#include <functional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "agent/repository.h"

namespace whorl::agent {

struct BackupOptions {
  std::vector<std::string> paths;  // as given; made absolute
  std::string host;
  std::vector<std::string> tags;
  std::vector<std::string> excludes;  // fnmatch globs: without '/' on the base name, else path
  bool one_file_system = false;
  // Reads every file and asks the index about every chunk and tree, as if there were no parent
  // snapshot (a backup does so by itself after `whorl repair`, see RepairGeneration).
  bool force = false;
};

struct BackupProgress {
  uint64_t files = 0;  // files processed so far (read, or unchanged and skipped)
  uint64_t bytes = 0;  // their bytes
  // What a concurrent scan of the paths has counted so far (for percentages and the ETA);
  // final once `totals_done`.
  uint64_t total_files = 0;
  uint64_t total_bytes = 0;
  bool totals_done = false;
};

struct BackupResult {
  Fingerprint id;
  v1::Snapshot snapshot;
  // Items that could not be saved ("PATH: reason"); the snapshot was committed without them.
  std::vector<std::string> errors;
  // Warnings that did not lose data (a file that changed while read).
  std::vector<std::string> warnings;
};

// Runs one backup. Fails (nothing committed) when no path exists or the repository fails;
// otherwise commits and lists the items it skipped in `errors`. `on_error` and `on_progress`,
// if set, are called as things happen (progress at most a few times a second).
absl::StatusOr<BackupResult> RunBackup(
    Repository* repo, const BackupOptions& options,
    const std::function<void(const std::string&)>& on_error = nullptr,
    const std::function<void(const BackupProgress&)>& on_progress = nullptr);

// Absolute, lexically normal form of `path` (no trailing '/', "." and ".." resolved).
std::string AbsolutePath(const std::string& path);

}  // namespace whorl::agent

#endif  // WHORL_AGENT_BACKUP_H_
