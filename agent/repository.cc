#include "agent/repository.h"

#include <map>
#include <set>

#include "agent/objects.h"
#include "common/status_macros.h"

namespace whorl::agent {

absl::StatusOr<std::vector<EncodedChunk>> SplitBundle(const EncodedChunk& bundle,
                                                      const CompressionSpec& spec) {
  WHORL_ASSIGN_OR_RETURN(const std::string plain,
                         Decode(bundle.codec, bundle.data, bundle.plain_size));
  WHORL_ASSIGN_OR_RETURN(const std::vector<BundleSlice> slices, ParseBundle(plain));
  if (slices.size() != bundle.members.size()) {
    return absl::DataLossError("bundle table does not list its members");
  }
  std::vector<EncodedChunk> out(slices.size());
  for (size_t i = 0; i < slices.size(); ++i) {
    if (slices[i].member != bundle.members[i]) {
      return absl::DataLossError("bundle table does not list its members");
    }
    const std::string_view bytes =
        std::string_view(plain).substr(slices[i].offset, slices[i].member.size);
    out[i].fingerprint = slices[i].member.fingerprint;
    out[i].plain_size = bytes.size();
    out[i].data = Encode(spec, bytes, &out[i].codec);
  }
  return out;
}

absl::StatusOr<v1::Tree> LoadTree(Repository* repo, std::string_view fp_bytes) {
  WHORL_ASSIGN_OR_RETURN(Fingerprint fp, Fingerprint::FromBytes(fp_bytes));
  WHORL_ASSIGN_OR_RETURN(std::string bytes, repo->GetChunk(fp));
  absl::StatusOr<v1::Tree> tree = DecodeTree(bytes);
  if (!tree.ok()) return Annotate(tree.status(), "tree " + fp.ToHex());
  return tree;
}

void PreloadTrees(
    Repository* repo, const v1::Tree& root, uint64_t max_bytes,
    const std::function<absl::StatusOr<v1::Tree>(std::string_view bytes)>& parse,
    const std::function<bool(const std::string& path)>& follow,
    const std::function<void(const Fingerprint& fp, std::string bytes, v1::Tree tree)>& keep) {
  // The next level: each distinct subtree once, with the first path it was met at.
  std::map<Fingerprint, std::string> level;
  auto add_subtrees = [&](const std::string& dir, const v1::Tree& tree,
                          std::map<Fingerprint, std::string>* next) {
    for (const v1::Node& n : tree.nodes()) {
      if (n.type() != v1::Node::DIR) continue;
      std::string path = dir + "/" + n.name();
      absl::StatusOr<Fingerprint> fp = Fingerprint::FromBytes(n.subtree());
      if (fp.ok() && follow(path)) next->emplace(*fp, std::move(path));
    }
  };
  add_subtrees("", root, &level);
  std::set<Fingerprint> loaded;
  uint64_t bytes = 0;
  while (!level.empty() && bytes < max_bytes) {
    std::vector<Fingerprint> fps;
    for (const auto& [fp, path] : level) fps.push_back(fp);
    repo->Prefetch(fps);
    std::map<Fingerprint, std::string> next;
    for (const auto& [fp, path] : level) {
      if (bytes >= max_bytes) break;
      absl::StatusOr<std::string> raw = repo->GetChunk(fp);
      if (!raw.ok()) continue;
      bytes += raw->size();
      absl::StatusOr<v1::Tree> tree = parse(*raw);
      if (!tree.ok()) continue;
      loaded.insert(fp);
      add_subtrees(path, *tree, &next);
      keep(fp, *std::move(raw), *std::move(tree));
    }
    std::erase_if(next, [&](const auto& e) { return loaded.contains(e.first); });
    level = std::move(next);
  }
  // What was announced and not read (the cap was reached) is the walk's to read.
}

namespace {
// Deeper than any real filesystem; stops a hostile chain of trees from exhausting the stack.
constexpr int kMaxDepth = 512;

void Walk(Repository* repo, const std::string& dir_path, std::string_view fp, int depth,
          const std::function<bool(const std::string&, const v1::Node&)>& fn,
          const std::function<void(const std::string&, const absl::Status&)>& on_error) {
  if (depth > kMaxDepth) {
    on_error(dir_path.empty() ? "/" : dir_path,
             absl::InvalidArgumentError("trees nested too deep"));
    return;
  }
  absl::StatusOr<v1::Tree> tree = LoadTree(repo, fp);
  if (!tree.ok()) {
    on_error(dir_path.empty() ? "/" : dir_path, tree.status());
    return;
  }
  if (repo->ReadsCostARoundTrip()) {
    // The subtrees the walk will load next, fetched together (a round trip per directory with
    // subdirectories, not per subdirectory).
    std::vector<Fingerprint> subtrees;
    for (const v1::Node& node : tree->nodes()) {
      if (node.type() != v1::Node::DIR) continue;
      if (auto sub = Fingerprint::FromBytes(node.subtree()); sub.ok()) subtrees.push_back(*sub);
    }
    repo->Prefetch(subtrees);
  }
  for (const v1::Node& node : tree->nodes()) {
    const std::string path = dir_path + "/" + node.name();
    if (fn(path, node) && node.type() == v1::Node::DIR) {
      Walk(repo, path, node.subtree(), depth + 1, fn, on_error);
    }
  }
}
}  // namespace

void WalkTree(Repository* repo, std::string_view root,
              const std::function<bool(const std::string& path, const v1::Node& node)>& fn,
              const std::function<void(const std::string& path, const absl::Status&)>& on_error) {
  Walk(repo, "", root, 0, fn, on_error);
}

}  // namespace whorl::agent
