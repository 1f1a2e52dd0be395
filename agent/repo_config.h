// The repository's parameters, fixed at `whorl init` and shared by every client so that the same
// bytes give the same chunks on every host. Stored as the JSON file REPO/config; see
// repository_format.md.
#ifndef WHORL_AGENT_REPO_CONFIG_H_
#define WHORL_AGENT_REPO_CONFIG_H_

#include <string>
#include <string_view>

#include "absl/status/statusor.h"
#include "common/chunker.h"
#include "common/codec.h"

namespace whorl::agent {

// Version 2 adds bundles (several small chunks compressed as one pack record, see
// chunk-store/pack_format.md): a version 1 build cannot read them, so it must refuse the
// repository. Version 3 adds LZ4 (codec 2), the only thing a version 2 build cannot read in it;
// a config names "lz4" only at version 3 or later. This build reads versions
// kOldestRepoFormatVersion..kRepoFormatVersion and writes bundles only into a version 2 or later
// repository (builds before version 4 existed made version 3 when a compression setting was
// LZ4, else version 2, so that a repository stayed readable by the builds that could read
// everything it might hold). Version 4
// adds chunk lists (Node.chunk_lists, repository_format.md): a file of more than
// kMaxInlineChunks chunks names lists of its chunks instead of the chunks, which a version 3
// build would read as an empty file, so it must refuse the repository. Version 5 adds tree
// deltas (Tree.base and Tree.removed, proto/objects_format.md): a version 4 build would read a
// delta as a directory holding only what changed, so it must refuse the repository. `whorl
// init` makes version 5; backups write deltas only into a version 5 repository.
inline constexpr int kRepoFormatVersion = 5;
inline constexpr int kLz4RepoFormatVersion = 3;
inline constexpr int kChunkListRepoFormatVersion = 4;
inline constexpr int kTreeDeltaRepoFormatVersion = 5;
inline constexpr int kOldestRepoFormatVersion = 1;

struct RepoConfig {
  int version = kRepoFormatVersion;
  // Whether backups may store bundles.
  bool bundles() const { return version >= 2; }
  // Whether backups may store chunk lists.
  bool chunk_lists() const { return version >= kChunkListRepoFormatVersion; }
  // Whether backups may store a tree as a delta against its parent snapshot's.
  bool tree_deltas() const { return version >= kTreeDeltaRepoFormatVersion; }
  std::string id;  // 32 lowercase hex digits, random at init
  ChunkerParams chunker;
  CompressionSpec compression;  // trees and chunks of files under kLargeFileBytes (bundled)
  // Chunks of files of kLargeFileBytes and more. A config without the field (written before
  // it existed) uses `compression` for every chunk, as builds before did.
  CompressionSpec large_compression;

  std::string ToJson() const;
  // Refuses (FAILED_PRECONDITION "unsupported repository version N") a version it does not
  // know and (DATA_LOSS) anything that does not parse or fails validation.
  static absl::StatusOr<RepoConfig> FromJson(std::string_view json);
};

// Defaults chosen by measurement: see README "Why these chunk sizes".
inline constexpr uint32_t kDefaultChunkMin = 8 << 10;
inline constexpr uint32_t kDefaultChunkAvg = 32 << 10;
inline constexpr uint32_t kDefaultChunkMax = 128 << 10;

// Files of this size and more are cut into chunks that are stored one per pack record, never
// bundled, and compressed with RepoConfig::large_compression.
inline constexpr uint64_t kLargeFileBytes = 16 << 20;

// What `whorl init` chooses. Large files (disk images, archives, databases) with LZ4: on the
// benchmark's 1 GiB image it compresses twice as fast as zstd's level 1 (957 against 498 MB/s,
// one core), which is where a first backup of such a file spends its CPU, for 21% more packed
// bytes (README "Why these compression levels"). Small files, bundled, stay at zstd's level 3,
// where the source tree's repository is what the user pays for.
inline constexpr CompressionSpec kDefaultCompression{Codec::kZstd, 3};
inline constexpr CompressionSpec kDefaultLargeCompression{Codec::kLz4, 0};

// A new config: random id and random irreducible polynomial (from the OS's CSPRNG).
absl::StatusOr<RepoConfig> NewRepoConfig(uint32_t min, uint32_t avg, uint32_t max,
                                         const CompressionSpec& compression,
                                         const CompressionSpec& large_compression);

}  // namespace whorl::agent

#endif  // WHORL_AGENT_REPO_CONFIG_H_
