#include "agent/check.h"

#include <algorithm>
#include <chrono>
#include <map>
#include <set>
#include <thread>
#include <unordered_map>
#include <unordered_set>

#include "agent/objects.h"
#include "common/status_macros.h"

namespace whorl::agent {
namespace {

using FingerprintSet = std::unordered_set<Fingerprint, FingerprintHash>;

std::string ShortId(const Fingerprint& id) { return id.ToHex().substr(0, 8); }

// The chunks a chunk list names.
absl::StatusOr<std::vector<Fingerprint>> ReadChunkList(Repository* repo, const Fingerprint& fp) {
  WHORL_ASSIGN_OR_RETURN(std::string bytes, repo->GetChunk(fp));
  return DecodeChunkList(bytes);
}

// Every chunk, chunk list and tree (a delta's base too) a snapshot references, with the path
// of a user, via `fn`.
// A chunk list that cannot be read is a problem (its chunks are then not named).
void ForEachReference(Repository* repo, const metadata::SnapshotRecord& snap,
                      const std::function<void(const Fingerprint&, const std::string&)>& fn,
                      std::vector<std::string>* problems) {
  if (auto root = Fingerprint::FromBytes(snap.snapshot.root()); root.ok()) fn(*root, "/");
  WalkTree(
      repo, snap.snapshot.root(),
      [&](const std::string& path, const v1::Node& node) {
        if (node.type() == v1::Node::DIR) {
          if (auto fp = Fingerprint::FromBytes(node.subtree()); fp.ok()) fn(*fp, path);
        }
        for (const std::string& c : node.chunks()) {
          if (auto fp = Fingerprint::FromBytes(c); fp.ok()) fn(*fp, path);
        }
        for (const std::string& c : node.chunk_lists()) {
          absl::StatusOr<Fingerprint> list_fp = Fingerprint::FromBytes(c);
          if (!list_fp.ok()) continue;
          fn(*list_fp, path);
          absl::StatusOr<std::vector<Fingerprint>> chunks = ReadChunkList(repo, *list_fp);
          if (!chunks.ok()) {
            problems->push_back("snapshot " + ShortId(snap.id) + ": chunk list of " + path + ": " +
                                std::string(chunks.status().message()));
            continue;
          }
          for (const Fingerprint& fp : *chunks) fn(fp, path);
        }
        return true;
      },
      [&](const std::string& path, const absl::Status& status) {
        problems->push_back("snapshot " + ShortId(snap.id) + ": tree of " + path + ": " +
                            std::string(status.message()));
      },
      [&](const std::string& path, const Fingerprint& base) { fn(base, path); });
}

// The pause before read number `attempt` (1-based; 2 and 3 are retries).
std::chrono::milliseconds RetryPause(int attempt) {
  return std::chrono::milliseconds(2 << attempt);
}

// Reads through `inner`, each failed read retried (ReadChunkRetrying): the tree walks of check
// see a transient fault as nothing at all.
class RetryingRepository : public ForwardingRepository {
 public:
  using ForwardingRepository::ForwardingRepository;
  absl::StatusOr<std::string> GetChunk(const Fingerprint& fp) override {
    return ReadChunkRetrying(inner(), fp, kReadAttempts);
  }
};

// Reads every chunk of `fps`; the failed ones are read again, all together after one pause,
// up to kReadAttempts reads each. Returns the chunks whose every read failed, with why.
std::map<Fingerprint, std::string> ReadAllData(Repository* repo,
                                               const std::vector<Fingerprint>& fps) {
  std::map<Fingerprint, absl::Status> failed;
  // From a cluster, a slice at a time is fetched ahead (GetChunk still checks each one's hash):
  // one round trip per chunk would make the check a matter of hours.
  constexpr size_t kSlice = 1024;
  for (size_t begin = 0; begin < fps.size(); begin += kSlice) {
    const size_t end = std::min(fps.size(), begin + kSlice);
    if (repo->ReadsCostARoundTrip()) repo->Prefetch({fps.begin() + begin, fps.begin() + end});
    for (size_t i = begin; i < end; ++i) {
      if (absl::StatusOr<std::string> data = repo->GetChunk(fps[i]); !data.ok()) {
        failed[fps[i]] = data.status();
      }
    }
    repo->ForgetPrefetched();
  }
  for (int attempt = 2; attempt <= kReadAttempts && !failed.empty(); ++attempt) {
    std::this_thread::sleep_for(RetryPause(attempt));
    for (auto it = failed.begin(); it != failed.end();) {
      absl::StatusOr<std::string> data =
          absl::IsNotFound(it->second) ? it->second : repo->GetChunk(it->first);
      if (data.ok()) {
        it = failed.erase(it);  // a transient fault, not damage
      } else {
        it->second = data.status();
        ++it;
      }
    }
  }
  std::map<Fingerprint, std::string> out;
  for (const auto& [fp, status] : failed) {
    out[fp] =
        std::string(status.message()) +
        (absl::IsNotFound(status) ? ""
                                  : " (all " + std::to_string(kReadAttempts) + " reads failed)");
  }
  return out;
}

}  // namespace

absl::StatusOr<std::string> ReadChunkRetrying(Repository* repo, const Fingerprint& fp,
                                              int attempts) {
  absl::StatusOr<std::string> data = repo->GetChunk(fp);
  for (int i = 2; i <= attempts && !data.ok() && !absl::IsNotFound(data.status()); ++i) {
    std::this_thread::sleep_for(RetryPause(i));
    data = repo->GetChunk(fp);
  }
  return data;
}

absl::Status ReadChunkRetrying(Repository* repo, const Fingerprint& fp, int attempts,
                               absl::FunctionRef<absl::Status(std::string_view)> use) {
  bool used = false;
  auto once = [&used, use](std::string_view data) {
    used = true;
    return use(data);
  };
  absl::Status s = repo->ReadChunk(fp, once);
  for (int i = 2; i <= attempts && !s.ok() && !used && !absl::IsNotFound(s); ++i) {
    std::this_thread::sleep_for(RetryPause(i));
    s = repo->ReadChunk(fp, once);
  }
  return s;
}

absl::StatusOr<std::vector<std::string>> RunCheck(Repository* data_repo,
                                                  const CheckOptions& options,
                                                  CheckDetails* details) {
  CheckDetails ignored_details;
  if (details == nullptr) details = &ignored_details;
  data_repo->ForgetPrefetched();  // every chunk is read from the store now
  RetryingRepository retrying(data_repo);
  Repository* repo = &retrying;
  std::vector<std::string> problems;
  WHORL_ASSIGN_OR_RETURN(std::vector<metadata::SnapshotRecord> snaps, repo->ListSnapshots());
  WHORL_ASSIGN_OR_RETURN(std::vector<Fingerprint> stored_list, repo->ListChunks());
  const FingerprintSet stored(stored_list.begin(), stored_list.end());

  // Structure: everything referenced is in the chunk store and the index.
  FingerprintSet referenced;
  for (const auto& snap : snaps) {
    ForEachReference(
        repo, snap, [&](const Fingerprint& fp, const std::string&) { referenced.insert(fp); },
        &problems);
  }
  const std::vector<Fingerprint> ref_list(referenced.begin(), referenced.end());
  WHORL_ASSIGN_OR_RETURN(std::vector<bool> missing, repo->FindMissing(ref_list));
  std::set<Fingerprint> absent;
  for (size_t i = 0; i < ref_list.size(); ++i) {
    if (missing[i]) problems.push_back("chunk " + ref_list[i].ToHex() + " is not in the index");
    if (!stored.contains(ref_list[i])) absent.insert(ref_list[i]);
  }

  // Data: every stored chunk decodes and hashes to its fingerprint.
  std::map<Fingerprint, std::string> damaged;
  if (options.read_data) damaged = ReadAllData(data_repo, stored_list);
  for (const Fingerprint& fp : absent) damaged[fp] = "missing from the chunk store";

  // Packs: without reading data, a pack file missing, empty, with a bad header or cut short
  // loses the chunks the locator places in it (a read error, if any, says more: it stays).
  WHORL_ASSIGN_OR_RETURN(const std::vector<PackDamage> packs, data_repo->CheckPacks());
  for (const PackDamage& p : packs) {
    if (p.lost.empty()) {
      details->notes.push_back(p.pack + " is damaged: " + p.problem +
                               " (no chunk the store locates is lost with it)");
      continue;
    }
    problems.push_back(p.pack + " is damaged: " + p.problem + " (" + std::to_string(p.lost.size()) +
                       (p.lost.size() == 1 ? " chunk lost)" : " chunks lost)"));
    for (const Fingerprint& fp : p.lost) damaged.emplace(fp, "in damaged " + p.pack);
  }
  for (const auto& [fp, why] : damaged) details->damaged.push_back(fp);

  if (!damaged.empty()) {
    std::unordered_map<Fingerprint, std::vector<std::string>, FingerprintHash> users;
    for (const auto& snap : snaps) {
      std::vector<std::string> ignored;
      ForEachReference(
          repo, snap,
          [&](const Fingerprint& fp, const std::string& path) {
            if (damaged.contains(fp)) {
              users[fp].push_back("snapshot " + ShortId(snap.id) + " file " + path);
            }
          },
          &ignored);
    }
    for (const auto& [fp, why] : damaged) {
      std::string line = "chunk " + fp.ToHex() + " is damaged: " + why;
      for (const std::string& u : users[fp]) line += "\n  used by " + u;
      problems.push_back(std::move(line));
    }
  }
  return problems;
}

}  // namespace whorl::agent
