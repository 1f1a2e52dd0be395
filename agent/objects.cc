#include "agent/objects.h"

#include <algorithm>

#include "absl/container/flat_hash_set.h"
#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "common/crc32c.h"
#include "common/fingerprint.h"
#include "common/status_macros.h"
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

bool EndsChunkList(const Fingerprint& last, size_t count) {
  if (count >= kMaxListChunks) return true;
  return count >= kMinListChunks && (last.Prefix64() & 0xfff) == 0;
}

std::string EncodeChunkList(std::span<const Fingerprint> chunks) {
  std::string out;
  out.reserve(chunks.size() * Fingerprint::kSize);
  for (const Fingerprint& fp : chunks) {
    out.append(reinterpret_cast<const char*>(fp.bytes.data()), Fingerprint::kSize);
  }
  return out;
}

absl::StatusOr<std::vector<Fingerprint>> DecodeChunkList(std::string_view bytes) {
  if (bytes.empty() || bytes.size() % Fingerprint::kSize != 0 ||
      bytes.size() > kMaxListChunks * Fingerprint::kSize) {
    return absl::DataLossError(absl::StrCat("chunk list of ", bytes.size(), " bytes is not 1 to ",
                                            kMaxListChunks, " fingerprints of 32 bytes"));
  }
  std::vector<Fingerprint> out;
  out.reserve(bytes.size() / Fingerprint::kSize);
  for (size_t at = 0; at < bytes.size(); at += Fingerprint::kSize) {
    out.push_back(*Fingerprint::FromBytes(bytes.substr(at, Fingerprint::kSize)));
  }
  return out;
}

absl::Status ChunkListBuilder::StoreList(size_t begin, size_t end) {
  std::string bytes = EncodeChunkList(std::span(pending_).subspan(begin, end - begin));
  const Fingerprint fp = Sha256(bytes);
  WHORL_RETURN_IF_ERROR(store_(fp, std::move(bytes)));
  lists_.push_back(fp);
  return absl::OkStatus();
}

absl::Status ChunkListBuilder::Add(const Fingerprint& fp) {
  pending_.push_back(fp);
  if (listing_) {
    if (!EndsChunkList(fp, pending_.size())) return absl::OkStatus();
    WHORL_RETURN_IF_ERROR(StoreList(0, pending_.size()));
    pending_.clear();
    return absl::OkStatus();
  }
  if (!lists_allowed_ || pending_.size() <= kMaxInlineChunks) return absl::OkStatus();
  // Too many to stay inline: the lists are cut as if from the first chunk on.
  listing_ = true;
  size_t begin = 0;
  for (size_t i = 0; i < pending_.size(); ++i) {
    if (EndsChunkList(pending_[i], i + 1 - begin)) {
      WHORL_RETURN_IF_ERROR(StoreList(begin, i + 1));
      begin = i + 1;
    }
  }
  pending_.erase(pending_.begin(), pending_.begin() + static_cast<ptrdiff_t>(begin));
  return absl::OkStatus();
}

absl::Status ChunkListBuilder::Finish(v1::Node* node) {
  node->clear_chunks();
  node->clear_chunk_lists();
  if (!listing_) {
    node->mutable_chunks()->Reserve(static_cast<int>(pending_.size()));
    for (const Fingerprint& fp : pending_) node->add_chunks(fp.ToBytes());
  } else {
    if (!pending_.empty()) WHORL_RETURN_IF_ERROR(StoreList(0, pending_.size()));
    node->mutable_chunk_lists()->Reserve(static_cast<int>(lists_.size()));
    for (const Fingerprint& fp : lists_) node->add_chunk_lists(fp.ToBytes());
  }
  pending_.clear();
  lists_.clear();
  listing_ = false;
  return absl::OkStatus();
}

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
  for (const std::string& c : node.chunk_lists()) {
    if (c.size() != Fingerprint::kSize) {
      return absl::InvalidArgumentError("file '" + PrintableName(name) +
                                        "' has a bad chunk list id");
    }
  }
  if (node.chunks_size() > 0 && node.chunk_lists_size() > 0) {
    return absl::InvalidArgumentError("file '" + PrintableName(name) +
                                      "' has both chunks and chunk lists");
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
  if (IsTreeDelta(tree)) {
    WHORL_RETURN_IF_ERROR(ValidateTreeDelta(tree));
  }
  return tree;
}

bool IsTreeDelta(const v1::Tree& tree) { return !tree.base().empty() || tree.removed_size() > 0; }

absl::Status ValidateTreeDelta(const v1::Tree& delta) {
  if (delta.base().size() != Fingerprint::kSize) {
    return absl::InvalidArgumentError("tree delta has no base");
  }
  absl::flat_hash_set<std::string_view> held;
  for (const v1::Node& node : delta.nodes()) held.insert(node.name());
  for (int i = 0; i < delta.removed_size(); ++i) {
    const std::string& name = delta.removed(i);
    if (!IsValidNodeName(name)) {
      return absl::InvalidArgumentError("tree delta removes an unsafe name '" +
                                        PrintableName(name) + "'");
    }
    if (i > 0 && !(delta.removed(i - 1) < name)) {
      return absl::InvalidArgumentError("tree delta's removed names not sorted or duplicated at '" +
                                        PrintableName(name) + "'");
    }
    if (held.contains(name)) {
      return absl::InvalidArgumentError("tree delta both removes and holds '" +
                                        PrintableName(name) + "'");
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<v1::Tree> ApplyTreeDelta(const v1::Tree& base, const v1::Tree& delta) {
  if (IsTreeDelta(base)) return absl::DataLossError("tree delta's base is a delta too");
  absl::flat_hash_set<std::string_view> dropped;
  for (const std::string& name : delta.removed()) dropped.insert(name);
  absl::flat_hash_set<std::string_view> in_base;
  for (const v1::Node& node : base.nodes()) in_base.insert(node.name());
  for (const std::string& name : delta.removed()) {
    if (!in_base.contains(name)) {
      return absl::DataLossError("tree delta removes '" + PrintableName(name) +
                                 "', which its base does not hold");
    }
  }
  for (const v1::Node& node : delta.nodes()) dropped.insert(node.name());
  v1::Tree out;
  out.mutable_nodes()->Reserve(base.nodes_size() + delta.nodes_size());
  for (const v1::Node& node : base.nodes()) {
    if (!dropped.contains(node.name())) *out.add_nodes() = node;
  }
  for (const v1::Node& node : delta.nodes()) *out.add_nodes() = node;
  std::stable_sort(out.mutable_nodes()->begin(), out.mutable_nodes()->end(),
                   [](const v1::Node& a, const v1::Node& b) { return a.name() < b.name(); });
  return out;
}

v1::Tree MakeTreeDelta(const v1::Tree& base, std::string_view base_id, const v1::Tree& target) {
  v1::Tree delta;
  delta.set_base(std::string(base_id));
  int i = 0;
  int j = 0;
  while (i < base.nodes_size() || j < target.nodes_size()) {
    if (j == target.nodes_size() ||
        (i < base.nodes_size() && base.nodes(i).name() < target.nodes(j).name())) {
      delta.add_removed(base.nodes(i++).name());
    } else if (i == base.nodes_size() || target.nodes(j).name() < base.nodes(i).name()) {
      *delta.add_nodes() = target.nodes(j++);
    } else {
      if (metadata::SerializeDeterministic(base.nodes(i)) !=
          metadata::SerializeDeterministic(target.nodes(j))) {
        *delta.add_nodes() = target.nodes(j);
      }
      ++i;
      ++j;
    }
  }
  return delta;
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
