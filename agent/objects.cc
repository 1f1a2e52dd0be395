#include "agent/objects.h"

#include <algorithm>

#include "absl/status/status.h"
#include "common/crc32c.h"
#include "common/fingerprint.h"
#include "metadata-service/metadata_store.h"

namespace whorl::agent {
namespace {

constexpr std::string_view kManifestMagic = "WHORLMNF";
constexpr uint32_t kManifestVersion = 1;
constexpr size_t kManifestHeaderSize = 20;  // magic 8, version 4, length 4, crc 4
constexpr uint32_t kMaxManifestBody = 16u << 20;

void PutFixed32(std::string* out, uint32_t v) {
  for (int i = 0; i < 4; ++i) out->push_back(static_cast<char>(v >> (8 * i)));
}
uint32_t GetFixed32(const char* p) {
  uint32_t v = 0;
  for (int i = 3; i >= 0; --i) v = (v << 8) | static_cast<uint8_t>(p[i]);
  return v;
}

}  // namespace

std::string PrintableName(std::string_view name) {
  std::string out;
  for (unsigned char c : name) {
    if (c >= 0x20 && c < 0x7f && c != '\\') {
      out.push_back(static_cast<char>(c));
    } else {
      static constexpr char kHex[] = "0123456789abcdef";
      out += "\\x";
      out.push_back(kHex[c >> 4]);
      out.push_back(kHex[c & 15]);
    }
  }
  return out;
}

absl::Status ValidateNode(const v1::Node& node) {
  const std::string& name = node.name();
  if (!IsValidNodeName(name)) {
    return absl::InvalidArgumentError("tree entry has an unsafe name '" + PrintableName(name) +
                                      "'");
  }
  if (!v1::Node::Type_IsValid(node.type()) || node.type() == v1::Node::TYPE_UNSPECIFIED) {
    return absl::InvalidArgumentError("tree entry '" + PrintableName(name) +
                                      "' has an unknown type");
  }
  if (node.type() == v1::Node::DIR && node.subtree().size() != Fingerprint::kSize) {
    return absl::InvalidArgumentError("directory '" + PrintableName(name) + "' has no subtree");
  }
  for (const std::string& c : node.chunks()) {
    if (c.size() != Fingerprint::kSize) {
      return absl::InvalidArgumentError("file '" + PrintableName(name) + "' has a bad chunk id");
    }
  }
  return absl::OkStatus();
}

bool IsValidNodeName(std::string_view name) {
  return !name.empty() && name != "." && name != ".." && name.find('/') == std::string_view::npos &&
         name.find('\0') == std::string_view::npos;
}

std::string EncodeTree(v1::Tree* tree) {
  auto* nodes = tree->mutable_nodes();
  std::sort(nodes->begin(), nodes->end(),
            [](const v1::Node& a, const v1::Node& b) { return a.name() < b.name(); });
  return metadata::SerializeDeterministic(*tree);
}

absl::StatusOr<v1::Tree> DecodeTree(std::string_view bytes) {
  v1::Tree tree;
  if (!tree.ParseFromArray(bytes.data(), static_cast<int>(bytes.size()))) {
    return absl::DataLossError("tree object does not parse");
  }
  for (int i = 0; i < tree.nodes_size(); ++i) {
    const absl::Status s = ValidateNode(tree.nodes(i));
    if (!s.ok()) return s;
    if (i > 0 && !(tree.nodes(i - 1).name() < tree.nodes(i).name())) {
      return absl::InvalidArgumentError("tree entries not sorted or duplicated at '" +
                                        PrintableName(tree.nodes(i).name()) + "'");
    }
  }
  return tree;
}

std::string EncodeManifestFile(const v1::Snapshot& snapshot) {
  const std::string body = metadata::SerializeDeterministic(snapshot);
  std::string out(kManifestMagic);
  PutFixed32(&out, kManifestVersion);
  PutFixed32(&out, static_cast<uint32_t>(body.size()));
  PutFixed32(&out, crc32c::Value(body));
  out += body;
  return out;
}

absl::StatusOr<v1::Snapshot> DecodeManifestFile(std::string_view bytes,
                                                std::string_view repository_id) {
  if (bytes.size() < kManifestHeaderSize || bytes.substr(0, 8) != kManifestMagic) {
    return absl::InvalidArgumentError("manifest: not a whorl manifest file");
  }
  const uint32_t version = GetFixed32(bytes.data() + 8);
  if (version != kManifestVersion) {
    return absl::InvalidArgumentError("manifest: unsupported version " + std::to_string(version));
  }
  const uint32_t length = GetFixed32(bytes.data() + 12);
  if (length > kMaxManifestBody || bytes.size() != kManifestHeaderSize + length) {
    return absl::InvalidArgumentError("manifest: truncated or wrong length");
  }
  const std::string_view body = bytes.substr(kManifestHeaderSize);
  if (crc32c::Value(body) != GetFixed32(bytes.data() + 16)) {
    return absl::InvalidArgumentError("manifest: checksum mismatch (damaged file)");
  }
  v1::Snapshot snapshot;
  if (!snapshot.ParseFromArray(body.data(), static_cast<int>(body.size())) ||
      snapshot.root().size() != Fingerprint::kSize) {
    return absl::InvalidArgumentError("manifest: body does not parse");
  }
  if (snapshot.repository_id() != repository_id) {
    return absl::FailedPreconditionError("manifest belongs to another repository (" +
                                         snapshot.repository_id() + ")");
  }
  return snapshot;
}

}  // namespace whorl::agent
