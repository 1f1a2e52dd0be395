// Codecs for the objects the agent reads back from a repository or a file: trees and manifest
// files. Every decoder validates what it returns (names, sizes, order), since a tree or a
// manifest may be damaged or hostile. Formats: proto/whorl/v1/objects.proto and
// agent/manifest_format.md.
#ifndef WHORL_AGENT_OBJECTS_H_
#define WHORL_AGENT_OBJECTS_H_

#include <functional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "common/fingerprint.h"
#include "whorl/v1/objects.pb.h"

namespace whorl::agent {

// Sorts the tree's nodes by name and serializes it deterministically: equal directories give
// equal bytes, hence equal fingerprints.
std::string EncodeTree(v1::Tree* tree);

// Parses and validates a tree. DATA_LOSS if it does not parse; INVALID_ARGUMENT naming the
// entry if a name is empty, ".", "..", holds '/' or NUL, names are not strictly increasing
// (duplicates), a type is unknown, or a fingerprint is not 32 bytes.
absl::StatusOr<v1::Tree> DecodeTree(std::string_view bytes);

// Tree deltas (repository version 5, proto/objects_format.md "Tree deltas"): a tree stored as
// the changes from a *base*, a stored tree that is not a delta itself. DecodeTree also checks a
// delta's own fields (a 32-byte base; removed names valid, increasing, none also in `nodes`).
bool IsTreeDelta(const v1::Tree& tree);
// A delta's own checks of DecodeTree (INVALID_ARGUMENT), whatever the order of its nodes.
absl::Status ValidateTreeDelta(const v1::Tree& delta);

// The directory `delta` describes: `base`'s nodes, less those named in `delta.removed` or in
// `delta.nodes`, plus `delta.nodes`, sorted by name (a stable sort, so it also serves restore's
// unchecked trees). DATA_LOSS if `base` is a delta itself ("tree delta's base is a delta too") or
// lacks a name `delta` removes.
absl::StatusOr<v1::Tree> ApplyTreeDelta(const v1::Tree& base, const v1::Tree& delta);

// The delta that makes `target` from `base` (whose fingerprint is `base_id`): the nodes of
// `target` that `base` lacks or holds otherwise, and the names `target` lacks. Both trees must
// be whole and sorted by name (as DecodeTree and EncodeTree leave them).
v1::Tree MakeTreeDelta(const v1::Tree& base, std::string_view base_id, const v1::Tree& target);

// Whether `name` may be a directory entry's name (see DecodeTree).
bool IsValidNodeName(std::string_view name);

// One entry's checks of DecodeTree (name, type, fingerprint lengths), without the order rule:
// restore uses it to refuse bad entries one by one and restore the rest.
absl::Status ValidateNode(const v1::Node& node);

// Chunk lists (repository version 4, repository_format.md "Chunk lists"). A file of at most
// kMaxInlineChunks chunks names them in Node.chunks; a longer one names chunk lists in
// Node.chunk_lists, each the concatenated 32-byte fingerprints of consecutive chunks. A list
// ends after a chunk whose fingerprint's low 12 bits are zero (once it holds kMinListChunks)
// or at kMaxListChunks: where the lists end depends on the chunks around, not on their count
// from the start, so an edit early in a big file leaves its later lists as they were.
inline constexpr size_t kMaxInlineChunks = 2048;
inline constexpr size_t kMinListChunks = 256;
inline constexpr size_t kMaxListChunks = 16384;

// Whether a list holding `count` chunks, the last being `last`, ends there.
bool EndsChunkList(const Fingerprint& last, size_t count);

// A list's stored bytes, and back. DecodeChunkList refuses (DATA_LOSS) an empty list, one of
// more than kMaxListChunks, or a length that is not a multiple of 32.
std::string EncodeChunkList(std::span<const Fingerprint> chunks);
absl::StatusOr<std::vector<Fingerprint>> DecodeChunkList(std::string_view bytes);

// Gathers a file's chunk fingerprints as they come and hands each finished chunk list to
// `store` (fingerprint and bytes; the caller stores it after the chunks it names). Holds at
// most max(kMaxInlineChunks, kMaxListChunks) fingerprints, whatever the file's size.
// Thread-compatible.
class ChunkListBuilder {
 public:
  using Store = std::function<absl::Status(const Fingerprint& fp, std::string bytes)>;
  // Without `lists_allowed` (a repository before version 4) every chunk stays inline.
  ChunkListBuilder(bool lists_allowed, Store store)
      : lists_allowed_(lists_allowed), store_(std::move(store)) {}

  absl::Status Add(const Fingerprint& fp);
  // Sets the node's chunks or chunk lists (clearing the other).
  absl::Status Finish(v1::Node* node);

 private:
  absl::Status StoreList(size_t begin, size_t end);

  const bool lists_allowed_;
  Store store_;
  bool listing_ = false;
  std::vector<Fingerprint> pending_;  // the chunks so far, or those of the open list
  std::vector<Fingerprint> lists_;
};

// `name` with bytes outside printable ASCII (and '\\') as \xNN, for messages.
std::string PrintableName(std::string_view name);

// The manifest file written by `backup --manifest-out` and read by `restore --manifest`.
std::string EncodeManifestFile(const v1::Snapshot& snapshot);
// INVALID_ARGUMENT "manifest: ..." for a file that is truncated, garbage or of an unknown
// version; FAILED_PRECONDITION "manifest belongs to another repository" if its repository id
// is not `repository_id`.
absl::StatusOr<v1::Snapshot> DecodeManifestFile(std::string_view bytes,
                                                std::string_view repository_id);

}  // namespace whorl::agent

#endif  // WHORL_AGENT_OBJECTS_H_
