// Codecs for the objects the agent reads back from a repository or a file: trees and manifest
// files. Every decoder validates what it returns (names, sizes, order), since a tree or a
// manifest may be damaged or hostile. Formats: proto/whorl/v1/objects.proto and
// agent/manifest_format.md.
#ifndef WHORL_AGENT_OBJECTS_H_
#define WHORL_AGENT_OBJECTS_H_

#include <string>
#include <string_view>

#include "absl/status/statusor.h"
#include "whorl/v1/objects.pb.h"

namespace whorl::agent {

// Sorts the tree's nodes by name and serializes it deterministically: equal directories give
// equal bytes, hence equal fingerprints.
std::string EncodeTree(v1::Tree* tree);

// Parses and validates a tree. DATA_LOSS if it does not parse; INVALID_ARGUMENT naming the
// entry if a name is empty, ".", "..", holds '/' or NUL, names are not strictly increasing
// (duplicates), a type is unknown, or a fingerprint is not 32 bytes.
absl::StatusOr<v1::Tree> DecodeTree(std::string_view bytes);

// Whether `name` may be a directory entry's name (see DecodeTree).
bool IsValidNodeName(std::string_view name);

// One entry's checks of DecodeTree (name, type, fingerprint lengths), without the order rule:
// restore uses it to refuse bad entries one by one and restore the rest.
absl::Status ValidateNode(const v1::Node& node);

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
