#include "agent/repository.h"

#include <algorithm>
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

absl::StatusOr<LoadedTree> LoadStoredTree(Repository* repo, std::string_view fp_bytes,
                                          std::string* base_named) {
  WHORL_ASSIGN_OR_RETURN(Fingerprint fp, Fingerprint::FromBytes(fp_bytes));
  WHORL_ASSIGN_OR_RETURN(std::string bytes, repo->GetChunk(fp));
  absl::StatusOr<v1::Tree> tree = DecodeTree(bytes);
  if (!tree.ok()) return Annotate(tree.status(), "tree " + fp.ToHex());
  LoadedTree out;
  out.id = std::string(fp_bytes);
  if (!IsTreeDelta(*tree)) {
    out.tree = *std::move(tree);
    return out;
  }
  const Fingerprint base_fp = *Fingerprint::FromBytes(tree->base());  // DecodeTree checked it
  if (base_named != nullptr) *base_named = tree->base();
  absl::StatusOr<std::string> base_bytes = repo->GetChunk(base_fp);
  if (!base_bytes.ok()) {
    return Annotate(base_bytes.status(), "tree " + fp.ToHex() + ": base " + base_fp.ToHex());
  }
  absl::StatusOr<v1::Tree> base = DecodeTree(*base_bytes);
  if (!base.ok()) {
    return Annotate(base.status(), "tree " + fp.ToHex() + ": base " + base_fp.ToHex());
  }
  absl::StatusOr<v1::Tree> whole = ApplyTreeDelta(*base, *tree);
  if (!whole.ok()) return Annotate(whole.status(), "tree " + fp.ToHex());
  out.tree = *std::move(whole);
  out.base_id = tree->base();
  out.base = std::make_shared<const v1::Tree>(*std::move(base));
  return out;
}

void PreloadTrees(
    Repository* repo, const v1::Tree& root, uint64_t max_bytes,
    const std::function<absl::StatusOr<v1::Tree>(std::string_view bytes)>& parse,
    const std::function<bool(const std::string& path)>& follow,
    const std::function<void(const Fingerprint& fp, std::string bytes, LoadedTree tree)>& keep,
    const std::function<void(const Fingerprint& fp, std::string bytes)>& keep_base) {
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
  // Bases loaded, for the deltas that share one.
  std::map<Fingerprint, std::shared_ptr<const v1::Tree>> bases;
  uint64_t bytes = 0;
  while (!level.empty() && bytes < max_bytes) {
    std::vector<Fingerprint> fps;
    for (const auto& [fp, path] : level) fps.push_back(fp);
    repo->Prefetch(fps);
    struct Delta {
      Fingerprint fp;
      const std::string* path;
      std::string bytes;
      v1::Tree tree;
      Fingerprint base;
    };
    std::vector<Delta> deltas;
    std::map<Fingerprint, std::string> next;
    for (const auto& [fp, path] : level) {
      if (bytes >= max_bytes) break;
      absl::StatusOr<std::string> raw = repo->GetChunk(fp);
      if (!raw.ok()) continue;
      bytes += raw->size();
      absl::StatusOr<v1::Tree> tree = parse(*raw);
      if (!tree.ok()) continue;
      if (IsTreeDelta(*tree)) {
        absl::StatusOr<Fingerprint> base = Fingerprint::FromBytes(tree->base());
        if (!base.ok()) continue;
        deltas.push_back({fp, &path, *std::move(raw), *std::move(tree), *base});
        continue;
      }
      loaded.insert(fp);
      add_subtrees(path, *tree, &next);
      LoadedTree whole{*std::move(tree), fp.ToBytes(), "", nullptr};
      keep(fp, *std::move(raw), std::move(whole));
    }
    // The level's deltas' bases, fetched together, then the deltas applied.
    std::vector<Fingerprint> base_fps;
    for (const Delta& d : deltas) {
      if (!bases.contains(d.base)) base_fps.push_back(d.base);
    }
    std::sort(base_fps.begin(), base_fps.end());
    base_fps.erase(std::unique(base_fps.begin(), base_fps.end()), base_fps.end());
    repo->Prefetch(base_fps);
    for (const Fingerprint& fp : base_fps) {
      if (bytes >= max_bytes) break;
      absl::StatusOr<std::string> raw = repo->GetChunk(fp);
      if (!raw.ok()) continue;
      bytes += raw->size();
      absl::StatusOr<v1::Tree> tree = parse(*raw);
      if (!tree.ok() || IsTreeDelta(*tree)) continue;
      bases.emplace(fp, std::make_shared<const v1::Tree>(*std::move(tree)));
      keep_base(fp, *std::move(raw));
    }
    for (Delta& d : deltas) {
      auto base = bases.find(d.base);
      if (base == bases.end()) continue;
      absl::StatusOr<v1::Tree> whole = ApplyTreeDelta(*base->second, d.tree);
      if (!whole.ok()) continue;
      loaded.insert(d.fp);
      add_subtrees(*d.path, *whole, &next);
      keep(d.fp, std::move(d.bytes),
           LoadedTree{*std::move(whole), d.fp.ToBytes(), d.base.ToBytes(), base->second});
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
          const std::function<void(const std::string&, const absl::Status&)>& on_error,
          const std::function<void(const std::string&, const Fingerprint&)>& on_base) {
  if (depth > kMaxDepth) {
    on_error(dir_path.empty() ? "/" : dir_path,
             absl::InvalidArgumentError("trees nested too deep"));
    return;
  }
  std::string base;
  absl::StatusOr<LoadedTree> loaded = LoadStoredTree(repo, fp, &base);
  // A base the delta names is used even if it cannot be read (check reports it missing).
  if (!base.empty() && on_base) {
    on_base(dir_path.empty() ? "/" : dir_path, *Fingerprint::FromBytes(base));
  }
  if (!loaded.ok()) {
    on_error(dir_path.empty() ? "/" : dir_path, loaded.status());
    return;
  }
  const v1::Tree* tree = &loaded->tree;
  if (repo->ReadsCostARoundTrip()) {
    // The subtrees the walk will load next, fetched together (a round trip per directory with
    // subdirectories, not per subdirectory), and the bases of those that are deltas, together
    // too: each subtree is announced twice, read once here for the base it names and once by
    // the walk (a read-ahead serves both from one fetch).
    std::vector<Fingerprint> subtrees;
    for (const v1::Node& node : tree->nodes()) {
      if (node.type() != v1::Node::DIR) continue;
      if (auto sub = Fingerprint::FromBytes(node.subtree()); sub.ok()) subtrees.push_back(*sub);
    }
    std::vector<Fingerprint> twice = subtrees;
    twice.insert(twice.end(), subtrees.begin(), subtrees.end());
    repo->Prefetch(twice);
    std::vector<Fingerprint> bases;
    for (const Fingerprint& sub : subtrees) {
      absl::StatusOr<std::string> raw = repo->GetChunk(sub);
      v1::Tree t;  // only its base: the walk checks the tree when it gets to it
      if (!raw.ok() || !t.ParseFromArray(raw->data(), static_cast<int>(raw->size()))) continue;
      if (auto base = Fingerprint::FromBytes(t.base()); base.ok()) bases.push_back(*base);
    }
    repo->Prefetch(bases);
  }
  for (const v1::Node& node : tree->nodes()) {
    const std::string path = dir_path + "/" + node.name();
    if (fn(path, node) && node.type() == v1::Node::DIR) {
      Walk(repo, path, node.subtree(), depth + 1, fn, on_error, on_base);
    }
  }
}
}  // namespace

void WalkTree(
    Repository* repo, std::string_view root,
    const std::function<bool(const std::string& path, const v1::Node& node)>& fn,
    const std::function<void(const std::string& path, const absl::Status&)>& on_error,
    const std::function<void(const std::string& path, const Fingerprint& base)>& on_base) {
  Walk(repo, "", root, 0, fn, on_error, on_base);
}

}  // namespace whorl::agent
