#include "agent/remote_repository.h"

#include <grpcpp/grpcpp.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdlib>
#include <deque>
#include <filesystem>
#include <functional>
#include <iterator>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <random>
#include <thread>
#include <unordered_map>
#include <utility>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/synchronization/mutex.h"
#include "agent/read_ahead.h"
#include "common/bloom_filter.h"
#include "common/bundle.h"
#include "common/cluster_map.h"
#include "common/file_util.h"
#include "common/hash_ring.h"
#include "common/kill_point.h"
#include "common/status_macros.h"
#include "whorl/v1/service.grpc.pb.h"

namespace whorl::agent {
namespace {

// Per-call limits agreed with the daemons (proto/service_format.md).
constexpr size_t kMaxFindMissing = 16384;
constexpr size_t kMaxUnregister = 16384;
constexpr size_t kMaxForgetChunks = 4096;
constexpr size_t kMaxPutChunks = 4096;
constexpr size_t kMaxPutBytes = 32 << 20;
constexpr int kMaxMessageBytes = 80 << 20;
constexpr int kMaxEpochRetries = 3;
constexpr char kStaleEpochPayload[] = "whorl.dev/stale-epoch";
constexpr size_t kMaxCachedFilterBytes = size_t{1} << 30;
// Read-ahead: fingerprints per GetChunks stream, streams at once, and the cap on bytes held.
constexpr size_t kPrefetchBatch = 256;
constexpr size_t kPrefetchStreams = 4;
constexpr uint64_t kMaxReadAheadBytes = 64 << 20;

absl::Status FromGrpc(const grpc::Status& s, const std::string& where) {
  if (s.ok()) return absl::OkStatus();
  return absl::Status(static_cast<absl::StatusCode>(s.error_code()),
                      absl::StrCat(where, ": ", s.error_message()));
}

bool IsStaleEpoch(const absl::Status& s) { return s.GetPayload(kStaleEpochPayload).has_value(); }

std::string RandomHex(size_t bytes) {
  static thread_local std::mt19937_64 rng(std::random_device{}());
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out;
  for (size_t i = 0; i < bytes; ++i) {
    const unsigned v = static_cast<unsigned>(rng() & 0xff);
    out.push_back(kHex[v >> 4]);
    out.push_back(kHex[v & 15]);
  }
  return out;
}

std::string DefaultTenant() {
  char name[256] = {};
  if (::gethostname(name, sizeof(name) - 1) != 0) return "unknown";
  return name;
}

// One node of the map with its channel and stubs.
struct Node {
  std::string id;
  std::string address;
  std::string describe;  // "metadata shard meta-1 at 127.0.0.1:7001"
  std::shared_ptr<grpc::Channel> channel;
  std::unique_ptr<v1::Index::Stub> index;
  std::unique_ptr<v1::Catalog::Stub> catalog;
  std::unique_ptr<v1::Admin::Stub> admin;
  std::unique_ptr<v1::ChunkStore::Stub> chunks;
};

std::shared_ptr<grpc::Channel> MakeChannel(const std::string& address) {
  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(kMaxMessageBytes);
  args.SetMaxSendMessageSize(kMaxMessageBytes);
  return grpc::CreateCustomChannel(address, grpc::InsecureChannelCredentials(), args);
}

std::unique_ptr<Node> MakeNode(const std::string& kind, const std::string& id,
                               const std::string& address) {
  auto node = std::make_unique<Node>();
  node->id = id;
  node->address = address;
  node->describe = absl::StrCat(kind, " ", id, " at ", address);
  node->channel = MakeChannel(address);
  node->index = v1::Index::NewStub(node->channel);
  node->catalog = v1::Catalog::NewStub(node->channel);
  node->admin = v1::Admin::NewStub(node->channel);
  node->chunks = v1::ChunkStore::NewStub(node->channel);
  return node;
}

// The routing state of one cluster-map epoch: immutable once built.
struct Routing {
  ClusterMap map;
  std::unique_ptr<HashRing> meta_ring;
  std::unique_ptr<HashRing> chunk_ring;
  std::vector<std::unique_ptr<Node>> meta;    // in map order (ring indexes)
  std::vector<std::unique_ptr<Node>> chunks;  // in map order (ring indexes)
};

absl::StatusOr<std::shared_ptr<const Routing>> BuildRouting(ClusterMap map) {
  auto r = std::make_shared<Routing>();
  for (const ClusterNode& n : map.metadata) {
    r->meta.push_back(MakeNode("metadata shard", n.id, n.address));
  }
  for (const ClusterNode& n : map.chunkstores) {
    r->chunks.push_back(MakeNode("chunk-store node", n.id, n.address));
  }
  // Ring index i is the map's node i (the rings keep input order).
  WHORL_ASSIGN_OR_RETURN(HashRing meta_ring, map.MetadataRing());
  WHORL_ASSIGN_OR_RETURN(HashRing chunk_ring, map.ChunkStoreRing());
  r->meta_ring = std::make_unique<HashRing>(std::move(meta_ring));
  r->chunk_ring = std::make_unique<HashRing>(std::move(chunk_ring));
  r->map = std::move(map);
  return std::shared_ptr<const Routing>(std::move(r));
}

// Runs fn(i) for i in [0, n) on up to n threads; returns the first error by index.
absl::Status ParallelFor(size_t n, const std::function<absl::Status(size_t)>& fn) {
  if (n == 0) return absl::OkStatus();
  if (n == 1) return fn(0);
  std::vector<absl::Status> results(n);
  std::vector<std::thread> threads;
  threads.reserve(n);
  for (size_t i = 0; i < n; ++i) threads.emplace_back([&, i] { results[i] = fn(i); });
  for (std::thread& t : threads) t.join();
  for (absl::Status& s : results) {
    if (!s.ok()) return s;
  }
  return absl::OkStatus();
}

// A gRPC client of the whole cluster: channels, routing, retries, request headers.
class ClusterClient {
 public:
  ClusterClient(std::string url, RemoteOptions options)
      : url_(std::move(url)), options_(std::move(options)), command_id_(RandomHex(8)) {
    if (options_.tenant.empty()) options_.tenant = DefaultTenant();
    bootstrap_ = MakeNode("metadata shard", "(bootstrap)", url_.substr(kRemoteScheme.size()));
  }

  const std::string& url() const { return url_; }
  const std::string& tenant() const { return options_.tenant; }
  double call_timeout_s() const { return options_.call_timeout_s; }

  // Fetches the map from the bootstrap node and every metadata shard of the current map, and
  // keeps the newest (highest epoch): during a rolling map change nodes may disagree for a
  // while, and the newest map is the one that stops the refusals.
  absl::Status Refresh() {
    std::vector<const Node*> sources;
    std::shared_ptr<const Routing> old = routing();
    if (old != nullptr) {
      for (const auto& n : old->meta) sources.push_back(n.get());
    }
    sources.push_back(bootstrap_.get());
    std::vector<std::optional<ClusterMap>> maps(sources.size());
    std::vector<absl::Status> errors(sources.size());
    (void)ParallelFor(sources.size(), [&](size_t i) -> absl::Status {
      const Node* node = sources[i];
      v1::GetClusterMapRequest req;
      v1::GetClusterMapResponse resp;
      FillHeader(req.mutable_header(), 0);
      errors[i] = Call(*node, [&](grpc::ClientContext* ctx) {
        return node->admin->GetClusterMap(ctx, req, &resp);
      });
      if (!errors[i].ok()) return absl::OkStatus();
      absl::StatusOr<ClusterMap> map = ParseClusterMap(resp.cluster_map());
      if (!map.ok()) {
        errors[i] = Annotate(map.status(), "cluster map from " + node->describe);
        return absl::OkStatus();
      }
      maps[i] = *std::move(map);
      return absl::OkStatus();
    });
    std::optional<ClusterMap> best;
    for (auto& m : maps) {
      if (m.has_value() && (!best.has_value() || m->epoch > best->epoch)) best = std::move(m);
    }
    if (!best.has_value()) {
      // The bootstrap node's error says most: it is the one the user named.
      return errors.back();
    }
    if (old != nullptr && best->epoch == old->map.epoch) return absl::OkStatus();
    WHORL_ASSIGN_OR_RETURN(std::shared_ptr<const Routing> next, BuildRouting(*std::move(best)));
    absl::MutexLock lock(&mu_);
    routing_ = std::move(next);
    return absl::OkStatus();
  }

  std::shared_ptr<const Routing> routing() const {
    absl::MutexLock lock(&mu_);
    return routing_;
  }

  const Node& bootstrap() const { return *bootstrap_; }

  void FillHeader(v1::RequestHeader* header, uint64_t epoch) {
    header->set_request_id(absl::StrCat(command_id_, "-", ++sequence_));
    header->set_epoch(epoch);
    header->set_tenant(options_.tenant);
  }

  // One RPC with a deadline, retried on UNAVAILABLE with exponential backoff and jitter. A
  // stale-epoch refusal comes back marked (IsStaleEpoch) for the caller to refresh and redo.
  absl::Status Call(const Node& node,
                    const std::function<grpc::Status(grpc::ClientContext*)>& rpc) {
    static thread_local std::mt19937_64 rng(std::random_device{}());
    absl::Status status;
    for (int attempt = 0; attempt < std::max(1, options_.max_attempts); ++attempt) {
      if (attempt > 0) {
        const double base = 0.1 * static_cast<double>(1 << std::min(attempt - 1, 6));
        std::uniform_real_distribution<double> jitter(0.5, 1.5);
        std::this_thread::sleep_for(std::chrono::duration<double>(base * jitter(rng)));
      }
      grpc::ClientContext ctx;
      ctx.set_deadline(
          std::chrono::system_clock::now() +
          std::chrono::milliseconds(static_cast<int64_t>(options_.call_timeout_s * 1000)));
      const grpc::Status s = rpc(&ctx);
      status = FromGrpc(s, node.describe);
      if (s.error_code() == grpc::StatusCode::FAILED_PRECONDITION) {
        const auto& trailers = ctx.GetServerTrailingMetadata();
        if (trailers.find("whorl-epoch") != trailers.end()) {
          status.SetPayload(kStaleEpochPayload, absl::Cord("1"));
        }
      }
      if (s.error_code() != grpc::StatusCode::UNAVAILABLE) break;
    }
    return status;
  }

  // Runs `op` with the current routing; on a stale-epoch refusal refreshes the map and runs it
  // again (a few times at most).
  absl::Status Routed(const std::function<absl::Status(const Routing&)>& op) {
    absl::Status s;
    for (int i = 0; i <= kMaxEpochRetries; ++i) {
      std::shared_ptr<const Routing> r = routing();
      if (r == nullptr) {
        WHORL_RETURN_IF_ERROR(Refresh());
        r = routing();
      }
      s = op(*r);
      if (!IsStaleEpoch(s)) return s;
      WHORL_RETURN_IF_ERROR(Refresh());
    }
    return s;
  }

 private:
  const std::string url_;
  RemoteOptions options_;
  const std::string command_id_;
  std::atomic<uint64_t> sequence_{0};
  std::unique_ptr<Node> bootstrap_;
  mutable absl::Mutex mu_;
  std::shared_ptr<const Routing> routing_ ABSL_GUARDED_BY(mu_);
};

absl::Status ParseUrl(const std::string& url) {
  if (!IsRemoteUrl(url) || url.size() == kRemoteScheme.size() ||
      url.find(':', kRemoteScheme.size()) == std::string::npos) {
    return absl::InvalidArgumentError("bad repository URL \"" + url + "\": want whorl://HOST:PORT");
  }
  return absl::OkStatus();
}

class RemoteRepositoryImpl final : public RemoteRepository {
 public:
  RemoteRepositoryImpl(std::unique_ptr<ClusterClient> client, RepoConfig config)
      : client_(std::move(client)),
        config_(std::move(config)),
        read_ahead_([this](const std::vector<Fingerprint>& fps,
                           const ReadAhead::Deliver& deliver) { FetchBatch(fps, deliver); },
                    ReadAhead::Options{.threads = kPrefetchStreams,
                                       .batch = kPrefetchBatch,
                                       .max_bytes = kMaxReadAheadBytes}) {}

  const RepoConfig& config() const override { return config_; }

  absl::StatusOr<std::vector<bool>> FindMissing(const std::vector<Fingerprint>& fps) override {
    std::vector<bool> missing(fps.size(), false);
    WHORL_RETURN_IF_ERROR(client_->Routed([&](const Routing& r) -> absl::Status {
      WHORL_RETURN_IF_ERROR(EnsureFilters(r));
      // Group the fingerprints the filters cannot rule out by owning shard.
      std::vector<std::vector<size_t>> groups(r.meta.size());
      uint64_t filtered = 0;
      {
        absl::MutexLock lock(&filters_mu_);
        for (size_t i = 0; i < fps.size(); ++i) {
          const size_t owner = r.meta_ring->OwnerIndex(fps[i].Prefix64());
          auto it = filters_.find(r.meta[owner]->id);
          if (it != filters_.end() && !it->second.filter.MayContain(fps[i])) {
            missing[i] = true;  // certainly absent: no question needed
            ++filtered;
            continue;
          }
          groups[owner].push_back(i);
        }
      }
      filtered_ += filtered;
      // Split into calls of at most kMaxFindMissing; all calls in parallel.
      struct Part {
        size_t shard;
        size_t begin, end;  // into groups[shard]
      };
      std::vector<Part> parts;
      for (size_t g = 0; g < groups.size(); ++g) {
        for (size_t b = 0; b < groups[g].size(); b += kMaxFindMissing) {
          parts.push_back(Part{g, b, std::min(groups[g].size(), b + kMaxFindMissing)});
        }
      }
      return ParallelFor(parts.size(), [&](size_t p) -> absl::Status {
        const Part& part = parts[p];
        const Node& node = *r.meta[part.shard];
        const std::vector<size_t>& idx = groups[part.shard];
        v1::FindMissingRequest req;
        client_->FillHeader(req.mutable_header(), r.map.epoch);
        std::string* buf = req.mutable_fingerprints();
        buf->reserve((part.end - part.begin) * Fingerprint::kSize);
        for (size_t k = part.begin; k < part.end; ++k) buf->append(fps[idx[k]].ToBytes());
        asked_ += part.end - part.begin;
        v1::FindMissingResponse resp;
        WHORL_RETURN_IF_ERROR(client_->Call(node, [&](grpc::ClientContext* ctx) {
          return node.index->FindMissing(ctx, req, &resp);
        }));
        for (uint32_t m : resp.missing()) {
          if (m >= part.end - part.begin) {
            return absl::InternalError(
                absl::StrCat(node.describe, ": answer index ", m, " out of range"));
          }
          missing[idx[part.begin + m]] = true;
        }
        return absl::OkStatus();
      });
    }));
    return missing;
  }

  // A bundle goes to the node that owns its members; the uploader makes bundles per owner
  // (BundleGroup), and one whose members the current map gives to several nodes (the map changed
  // since) is split into single chunks here.
  absl::Status PutChunks(std::vector<EncodedChunk> chunks) override {
    if (!config_.bundles()) {
      for (const EncodedChunk& c : chunks) {
        if (!c.members.empty()) {
          return absl::FailedPreconditionError("a version 1 repository takes no bundles");
        }
      }
    }
    return client_->Routed([&](const Routing& r) -> absl::Status {
      // Not const: a chunk's bytes are lent to the request (swapped in, and back once the
      // call is done, for a retry under another routing), not copied into it.
      std::vector<EncodedChunk*> items;
      std::deque<EncodedChunk> split;  // single chunks cut out of bundles for this routing
      std::vector<std::vector<size_t>> groups(r.chunks.size());
      auto owner = [&](const Fingerprint& fp) { return r.chunk_ring->OwnerIndex(fp.Prefix64()); };
      for (EncodedChunk& c : chunks) {
        if (!c.members.empty()) {
          const size_t node = owner(c.members[0].fingerprint);
          const bool one_owner =
              std::all_of(c.members.begin(), c.members.end(),
                          [&](const BundleMember& m) { return owner(m.fingerprint) == node; });
          if (!one_owner) {
            WHORL_ASSIGN_OR_RETURN(std::vector<EncodedChunk> singles,
                                   SplitBundle(c, config_.compression));
            for (EncodedChunk& s : singles) {
              split.push_back(std::move(s));
              groups[owner(split.back().fingerprint)].push_back(items.size());
              items.push_back(&split.back());
            }
            continue;
          }
          groups[node].push_back(items.size());
        } else {
          groups[owner(c.fingerprint)].push_back(items.size());
        }
        items.push_back(&c);
      }
      struct Part {
        size_t node;
        std::vector<size_t> items;
      };
      std::vector<Part> parts;
      for (size_t g = 0; g < groups.size(); ++g) {
        Part cur{g, {}};
        size_t bytes = 0, entries = 0;  // a bundle counts its members against kMaxPutChunks
        for (size_t i : groups[g]) {
          const size_t n = std::max<size_t>(1, items[i]->members.size());
          if (!cur.items.empty() &&
              (entries + n > kMaxPutChunks || bytes + items[i]->data.size() > kMaxPutBytes)) {
            parts.push_back(std::move(cur));
            cur = Part{g, {}};
            bytes = 0;
            entries = 0;
          }
          cur.items.push_back(i);
          bytes += items[i]->data.size();
          entries += n;
        }
        if (!cur.items.empty()) parts.push_back(std::move(cur));
      }
      return ParallelFor(parts.size(), [&](size_t p) -> absl::Status {
        const Node& node = *r.chunks[parts[p].node];
        v1::PutChunksRequest req;
        client_->FillHeader(req.mutable_header(), r.map.epoch);
        for (size_t i : parts[p].items) {
          EncodedChunk& c = *items[i];
          v1::Chunk* out = req.add_chunks();
          out->set_fingerprint(c.members.empty() ? c.fingerprint.ToBytes()
                                                 : BundleId(c.members).ToBytes());
          out->set_codec(static_cast<uint32_t>(c.codec));
          out->set_plain_size(static_cast<uint32_t>(c.plain_size));
          out->mutable_data()->swap(c.data);
          for (const BundleMember& m : c.members) {
            v1::BundleMember* pm = out->add_members();
            pm->set_fingerprint(m.fingerprint.ToBytes());
            pm->set_size(m.size);
          }
        }
        v1::PutChunksResponse resp;
        const absl::Status s = client_->Call(node, [&](grpc::ClientContext* ctx) {
          return node.chunks->PutChunks(ctx, req, &resp);
        });
        for (size_t k = 0; k < parts[p].items.size(); ++k) {
          req.mutable_chunks(static_cast<int>(k))
              ->mutable_data()
              ->swap(items[parts[p].items[k]]->data);
        }
        return s;
      });
    });
  }

  absl::StatusOr<std::string> GetChunk(const Fingerprint& fp) override {
    if (std::optional<std::string> ahead = read_ahead_.Take(fp); ahead.has_value()) {
      if (ChunkSha256(*ahead) == fp) return *std::move(ahead);
      // A read-ahead copy that does not verify is fetched again below and reported there.
    }
    std::string plain;
    WHORL_RETURN_IF_ERROR(client_->Routed([&](const Routing& r) -> absl::Status {
      const Node& node = *r.chunks[r.chunk_ring->OwnerIndex(fp.Prefix64())];
      v1::GetChunksRequest req;
      client_->FillHeader(req.mutable_header(), r.map.epoch);
      req.add_fingerprints(fp.ToBytes());
      std::optional<v1::GetChunksResponse> got;
      WHORL_RETURN_IF_ERROR(client_->Call(node, [&](grpc::ClientContext* ctx) {
        got.reset();
        std::unique_ptr<grpc::ClientReader<v1::GetChunksResponse>> reader =
            node.chunks->GetChunks(ctx, req);
        v1::GetChunksResponse resp;
        while (reader->Read(&resp)) {
          if (!got.has_value()) got = std::move(resp);
        }
        return reader->Finish();
      }));
      if (!got.has_value()) {
        return absl::InternalError(node.describe + ": no answer for chunk " + fp.ToHex());
      }
      WHORL_ASSIGN_OR_RETURN(plain, DecodeAnswer(node, fp, *got));
      return absl::OkStatus();
    }));
    if (ChunkSha256(plain) != fp) {
      return absl::DataLossError("chunk " + fp.ToHex() + " does not hash to its fingerprint");
    }
    return plain;
  }

  // Hands `fps` to the read-ahead: fetched in the background, in batches, while the caller
  // works; GetChunk takes them (a restore or a walk of parent trees then costs a few round trips
  // per directory, not one per chunk). Failures are left for GetChunk to meet and report.
  void Prefetch(const std::vector<Fingerprint>& fps) override { read_ahead_.Announce(fps); }
  void ForgetPrefetched() override { read_ahead_.Forget(); }
  bool ReadsCostARoundTrip() const override { return true; }
  bool AcceptsBundles() const override { return config_.bundles(); }
  size_t BundleGroup(const Fingerprint& fp) const override {
    return client_->routing()->chunk_ring->OwnerIndex(fp.Prefix64());
  }

  absl::StatusOr<Fingerprint> CommitSnapshot(const v1::Snapshot& snapshot) override {
    const Fingerprint id = metadata::SnapshotId(snapshot);
    Fingerprint committed;
    WHORL_RETURN_IF_ERROR(client_->Routed([&](const Routing& r) -> absl::Status {
      const Node& node = *r.meta[r.meta_ring->OwnerIndex(id.Prefix64())];
      v1::CommitSnapshotRequest req;
      client_->FillHeader(req.mutable_header(), r.map.epoch);
      *req.mutable_snapshot() = snapshot;
      v1::CommitSnapshotResponse resp;
      WHORL_RETURN_IF_ERROR(client_->Call(node, [&](grpc::ClientContext* ctx) {
        return node.catalog->CommitSnapshot(ctx, req, &resp);
      }));
      absl::StatusOr<Fingerprint> got = Fingerprint::FromBytes(resp.id());
      if (!got.ok()) return Annotate(got.status(), node.describe + ": snapshot id");
      committed = *got;
      return absl::OkStatus();
    }));
    return committed;
  }

  absl::StatusOr<std::vector<metadata::SnapshotRecord>> ListSnapshots() override {
    std::vector<metadata::SnapshotRecord> all;
    WHORL_RETURN_IF_ERROR(client_->Routed([&](const Routing& r) -> absl::Status {
      std::vector<std::vector<metadata::SnapshotRecord>> per(r.meta.size());
      WHORL_RETURN_IF_ERROR(ParallelFor(r.meta.size(), [&](size_t i) -> absl::Status {
        const Node& node = *r.meta[i];
        v1::ListSnapshotsRequest req;
        client_->FillHeader(req.mutable_header(), r.map.epoch);
        v1::ListSnapshotsResponse resp;
        WHORL_RETURN_IF_ERROR(client_->Call(node, [&](grpc::ClientContext* ctx) {
          return node.catalog->ListSnapshots(ctx, req, &resp);
        }));
        for (v1::SnapshotEntry& e : *resp.mutable_snapshots()) {
          absl::StatusOr<Fingerprint> id = Fingerprint::FromBytes(e.id());
          if (!id.ok()) return Annotate(id.status(), node.describe + ": snapshot id");
          per[i].push_back(metadata::SnapshotRecord{*id, std::move(*e.mutable_snapshot())});
        }
        return absl::OkStatus();
      }));
      all.clear();
      for (auto& v : per) {
        for (auto& rec : v) all.push_back(std::move(rec));
      }
      return absl::OkStatus();
    }));
    std::sort(all.begin(), all.end(), [](const auto& a, const auto& b) {
      if (a.snapshot.time_ns() != b.snapshot.time_ns()) {
        return a.snapshot.time_ns() < b.snapshot.time_ns();
      }
      return a.id.bytes < b.id.bytes;
    });
    return all;
  }

  absl::StatusOr<std::vector<Fingerprint>> ListChunks() override {
    std::vector<Fingerprint> all;
    WHORL_RETURN_IF_ERROR(client_->Routed([&](const Routing& r) -> absl::Status {
      std::vector<std::vector<Fingerprint>> per(r.chunks.size());
      WHORL_RETURN_IF_ERROR(ParallelFor(r.chunks.size(), [&](size_t i) -> absl::Status {
        const Node& node = *r.chunks[i];
        v1::ListChunksRequest req;
        client_->FillHeader(req.mutable_header(), r.map.epoch);
        return client_->Call(node, [&](grpc::ClientContext* ctx) {
          per[i].clear();
          std::unique_ptr<grpc::ClientReader<v1::ListChunksResponse>> reader =
              node.chunks->ListChunks(ctx, req);
          v1::ListChunksResponse resp;
          bool bad = false;
          while (reader->Read(&resp)) {
            const std::string& b = resp.fingerprints();
            if (b.size() % Fingerprint::kSize != 0) bad = true;
            for (size_t o = 0; o + Fingerprint::kSize <= b.size(); o += Fingerprint::kSize) {
              per[i].push_back(
                  *Fingerprint::FromBytes(std::string_view(b.data() + o, Fingerprint::kSize)));
            }
          }
          grpc::Status s = reader->Finish();
          if (s.ok() && bad) {
            return grpc::Status(grpc::StatusCode::INTERNAL, "fingerprint list of a bad length");
          }
          return s;
        });
      }));
      all.clear();
      for (auto& v : per) all.insert(all.end(), v.begin(), v.end());
      return absl::OkStatus();
    }));
    return all;
  }

  absl::StatusOr<std::vector<PackDamage>> CheckPacks() override {
    std::vector<PackDamage> all;
    WHORL_RETURN_IF_ERROR(client_->Routed([&](const Routing& r) -> absl::Status {
      std::vector<std::vector<PackDamage>> per(r.chunks.size());
      WHORL_RETURN_IF_ERROR(ParallelFor(r.chunks.size(), [&](size_t i) -> absl::Status {
        const Node& node = *r.chunks[i];
        v1::CheckPacksRequest req;
        client_->FillHeader(req.mutable_header(), r.map.epoch);
        return client_->Call(node, [&](grpc::ClientContext* ctx) {
          per[i].clear();
          std::unique_ptr<grpc::ClientReader<v1::CheckPacksResponse>> reader =
              node.chunks->CheckPacks(ctx, req);
          v1::CheckPacksResponse resp;
          bool bad = false;
          uint32_t last_id = 0;
          while (reader->Read(&resp)) {
            const std::string& b = resp.lost();
            if (b.size() % Fingerprint::kSize != 0) bad = true;
            // Pages of one pack arrive one after the other.
            if (per[i].empty() || resp.pack_id() != last_id) {
              per[i].push_back(
                  PackDamage{absl::StrFormat("%s: pack %08u", node.describe, resp.pack_id()),
                             resp.problem(),
                             {}});
              last_id = resp.pack_id();
            }
            for (size_t o = 0; o + Fingerprint::kSize <= b.size(); o += Fingerprint::kSize) {
              per[i].back().lost.push_back(
                  *Fingerprint::FromBytes(std::string_view(b.data() + o, Fingerprint::kSize)));
            }
          }
          grpc::Status s = reader->Finish();
          if (s.ok() && bad) {
            return grpc::Status(grpc::StatusCode::INTERNAL, "fingerprint list of a bad length");
          }
          return s;
        });
      }));
      all.clear();
      for (auto& v : per) std::move(v.begin(), v.end(), std::back_inserter(all));
      return absl::OkStatus();
    }));
    return all;
  }

  // Every chunk-store node is asked (a chunk may sit on a node that owned it under an older
  // map); each reads the chunks it holds and forgets those that fail. Then the owning shards
  // drop the index entries of all but the chunks some node read back whole.
  absl::StatusOr<std::vector<Fingerprint>> ForgetChunks(
      const std::vector<Fingerprint>& fps) override {
    if (fps.empty()) return std::vector<Fingerprint>();
    ForgetPrefetched();
    absl::Mutex mu;
    absl::flat_hash_set<Fingerprint, FingerprintHash> kept;
    WHORL_RETURN_IF_ERROR(client_->Routed([&](const Routing& r) -> absl::Status {
      return ParallelFor(r.chunks.size(), [&](size_t i) -> absl::Status {
        const Node& node = *r.chunks[i];
        for (size_t b = 0; b < fps.size(); b += kMaxForgetChunks) {
          v1::ForgetChunksRequest req;
          client_->FillHeader(req.mutable_header(), r.map.epoch);
          for (size_t k = b; k < std::min(fps.size(), b + kMaxForgetChunks); ++k) {
            req.mutable_fingerprints()->append(fps[k].ToBytes());
          }
          v1::ForgetChunksResponse resp;
          WHORL_RETURN_IF_ERROR(client_->Call(node, [&](grpc::ClientContext* ctx) {
            return node.chunks->ForgetChunks(ctx, req, &resp);
          }));
          const std::string& k = resp.kept();
          if (k.size() % Fingerprint::kSize != 0) {
            return absl::InternalError(node.describe + ": kept list of a bad length");
          }
          absl::MutexLock lock(&mu);
          for (size_t o = 0; o < k.size(); o += Fingerprint::kSize) {
            kept.insert(
                *Fingerprint::FromBytes(std::string_view(k.data() + o, Fingerprint::kSize)));
          }
        }
        return absl::OkStatus();
      });
    }));
    WHORL_KILL_POINT("repair.forget.between");
    std::vector<Fingerprint> forget;
    for (const Fingerprint& fp : fps) {
      if (!kept.contains(fp)) forget.push_back(fp);
    }
    WHORL_RETURN_IF_ERROR(client_->Routed([&](const Routing& r) -> absl::Status {
      std::vector<std::vector<Fingerprint>> by_shard(r.meta.size());
      for (const Fingerprint& fp : forget) {
        by_shard[r.meta_ring->OwnerIndex(fp.Prefix64())].push_back(fp);
      }
      return ParallelFor(r.meta.size(), [&](size_t i) -> absl::Status {
        const Node& node = *r.meta[i];
        for (size_t b = 0; b < by_shard[i].size(); b += kMaxUnregister) {
          v1::UnregisterRequest req;
          client_->FillHeader(req.mutable_header(), r.map.epoch);
          for (size_t k = b; k < std::min(by_shard[i].size(), b + kMaxUnregister); ++k) {
            req.mutable_fingerprints()->append(by_shard[i][k].ToBytes());
          }
          v1::UnregisterResponse resp;
          WHORL_RETURN_IF_ERROR(client_->Call(node, [&](grpc::ClientContext* ctx) {
            return node.index->Unregister(ctx, req, &resp);
          }));
        }
        return absl::OkStatus();
      });
    }));
    std::vector<Fingerprint> out;
    for (const Fingerprint& fp : fps) {
      if (kept.contains(fp)) out.push_back(fp);
    }
    return out;
  }

  // The sum of the shards' generations: each only grows, so the sum grows with every repair
  // (a shard added later starts at 0). A shard from before 2026-12-01 answers UNIMPLEMENTED and
  // has never forgotten a chunk: 0.
  absl::StatusOr<uint64_t> RepairGeneration() override {
    uint64_t sum = 0;
    WHORL_RETURN_IF_ERROR(client_->Routed([&](const Routing& r) -> absl::Status {
      std::vector<uint64_t> per(r.meta.size(), 0);
      WHORL_RETURN_IF_ERROR(ParallelFor(r.meta.size(), [&](size_t i) -> absl::Status {
        const Node& node = *r.meta[i];
        v1::GetRepairGenerationRequest req;
        client_->FillHeader(req.mutable_header(), r.map.epoch);
        v1::GetRepairGenerationResponse resp;
        const absl::Status s = client_->Call(node, [&](grpc::ClientContext* ctx) {
          return node.index->GetRepairGeneration(ctx, req, &resp);
        });
        if (absl::IsUnimplemented(s)) return absl::OkStatus();
        WHORL_RETURN_IF_ERROR(s);
        per[i] = resp.repair_generation();
        return absl::OkStatus();
      }));
      sum = 0;
      for (uint64_t g : per) sum += g;
      return absl::OkStatus();
    }));
    return sum;
  }

  absl::StatusOr<RepoStats> Stats() override {
    WHORL_ASSIGN_OR_RETURN(ClusterStats stats, AdminStats());
    return stats.total;
  }

  // The read-ahead's fetch: one GetChunks stream per chunk-store node holding part of the batch.
  void FetchBatch(const std::vector<Fingerprint>& fps, const ReadAhead::Deliver& deliver) {
    std::shared_ptr<const Routing> r = client_->routing();
    if (r == nullptr) return;
    std::vector<std::vector<size_t>> by_node(r->chunks.size());
    for (size_t i = 0; i < fps.size(); ++i) {
      // In a bundle an earlier batch brought: no need to ask for it again.
      if (std::optional<std::string> plain = FromDecodedBundle(fps[i]); plain.has_value()) {
        if (!deliver(i, *std::move(plain))) return;
        continue;
      }
      by_node[r->chunk_ring->OwnerIndex(fps[i].Prefix64())].push_back(i);
    }
    for (size_t n = 0; n < by_node.size(); ++n) {
      const std::vector<size_t>& idx = by_node[n];
      if (idx.empty()) continue;
      const Node& node = *r->chunks[n];
      v1::GetChunksRequest req;
      client_->FillHeader(req.mutable_header(), r->map.epoch);
      for (size_t i : idx) req.add_fingerprints(fps[i].ToBytes());
      req.set_whole_bundles(true);
      grpc::ClientContext ctx;
      ctx.set_deadline(
          std::chrono::system_clock::now() +
          std::chrono::milliseconds(static_cast<int64_t>(client_->call_timeout_s() * 1000)));
      std::unique_ptr<grpc::ClientReader<v1::GetChunksResponse>> reader =
          node.chunks->GetChunks(&ctx, req);
      v1::GetChunksResponse resp;
      bool go_on = true;
      std::deque<std::shared_ptr<const StreamBundle>> bundles;
      for (size_t k = 0; go_on && k < idx.size() && reader->Read(&resp); ++k) {
        const uint32_t answer = static_cast<uint32_t>(k + 1);
        absl::StatusOr<std::string> plain =
            DecodeStreamAnswer(node, fps[idx[k]], resp, answer, &bundles);
        if (!bundles.empty() && bundles.back()->answer == answer) KeepDecoded(bundles.back());
        if (plain.ok()) go_on = deliver(idx[k], *std::move(plain));
      }
      ctx.TryCancel();
      (void)reader->Finish();
      if (!go_on) return;
    }
  }

  // A bundle a GetChunks stream carried (whole_bundles), decoded: answer number, bytes, table.
  struct StreamBundle {
    uint32_t answer = 0;
    std::string plain;
    std::vector<BundleSlice> slices;
    // Slice index by fingerprint: a bundle of trees holds up to 4096 members, each looked up.
    absl::flat_hash_map<Fingerprint, uint32_t, FingerprintHash> index;
  };

  // The plain bytes of `fp` in answer number `answer` of a whole_bundles stream (not yet
  // hash-verified). `bundles` holds the last kGetChunksBundlesKept bundles of the stream.
  static absl::StatusOr<std::string> DecodeStreamAnswer(
      const Node& node, const Fingerprint& fp, const v1::GetChunksResponse& got, uint32_t answer,
      std::deque<std::shared_ptr<const StreamBundle>>* bundles) {
    if (got.error_code() == 0 && got.same_bundle_as() != 0) {
      for (const auto& b : *bundles) {
        if (b->answer == got.same_bundle_as()) return Member(node, fp, *b);
      }
      return absl::DataLossError(absl::StrCat(node.describe, ": chunk ", fp.ToHex(),
                                              ": refers to the bundle of answer ",
                                              got.same_bundle_as(), ", not one of the last ",
                                              kGetChunksBundlesKept, " before answer ", answer));
    }
    absl::StatusOr<std::string> plain = DecodeAnswer(node, fp, got);
    if (!plain.ok() || !got.bundle()) return plain;
    absl::StatusOr<std::vector<BundleSlice>> slices = ParseBundle(*plain);
    if (!slices.ok()) {
      return absl::DataLossError(absl::StrCat(node.describe, ": bundle holding ", fp.ToHex(), ": ",
                                              slices.status().message()));
    }
    if (bundles->size() == kGetChunksBundlesKept) bundles->pop_front();
    auto b = std::make_shared<StreamBundle>();
    b->answer = answer;
    b->plain = *std::move(plain);
    b->slices = *std::move(slices);
    b->index.reserve(b->slices.size());
    for (size_t i = 0; i < b->slices.size(); ++i) {
      b->index.emplace(b->slices[i].member.fingerprint, static_cast<uint32_t>(i));
    }
    bundles->push_back(std::move(b));
    return Member(node, fp, *bundles->back());
  }

  // The read-ahead's streams share the bundles they decoded last: a bundle whose members fall
  // in two batches is fetched and decoded once, not once per batch.
  // At most kDecodedBundlesKept, and no older one once they hold more than
  // kDecodedBundleBytesKept plain bytes; a bundle used again is the newest (least recently used
  // first).
  void KeepDecoded(std::shared_ptr<const StreamBundle> b) {
    absl::MutexLock lock(&decoded_mu_);
    if (std::find(decoded_.begin(), decoded_.end(), b) != decoded_.end()) return;
    // The same bundle, decoded by another stream at the same time (streams fetching neighbouring
    // batches ask for it together): one copy is enough.
    if (auto it = decoded_members_.find(b->slices[0].member.fingerprint);
        it != decoded_members_.end() && it->second.first->plain == b->plain) {
      return;
    }
    for (size_t i = 0; i < b->slices.size(); ++i) {
      decoded_members_[b->slices[i].member.fingerprint] = {b, i};
    }
    decoded_bytes_ += b->plain.size();
    decoded_.push_back(std::move(b));
    while (decoded_.size() > kDecodedBundlesKept ||
           (decoded_bytes_ > kDecodedBundleBytesKept && decoded_.size() > 1)) {
      auto victim = decoded_.begin();
      const std::shared_ptr<const StreamBundle> old = *victim;
      decoded_.erase(victim);
      decoded_bytes_ -= old->plain.size();
      for (size_t i = 0; i < old->slices.size(); ++i) {
        auto it = decoded_members_.find(old->slices[i].member.fingerprint);
        if (it != decoded_members_.end() && it->second.first == old) decoded_members_.erase(it);
      }
    }
  }
  std::optional<std::string> FromDecodedBundle(const Fingerprint& fp) {
    absl::MutexLock lock(&decoded_mu_);
    auto it = decoded_members_.find(fp);
    if (it == decoded_members_.end()) return std::nullopt;
    const std::shared_ptr<const StreamBundle>& b = it->second.first;
    const BundleSlice& s = b->slices[it->second.second];
    if (decoded_.back() != b) {
      auto at = std::find(decoded_.begin(), decoded_.end(), b);
      if (at != decoded_.end()) {
        std::shared_ptr<const StreamBundle> used = *at;
        decoded_.erase(at);
        decoded_.push_back(std::move(used));
      }
    }
    return b->plain.substr(s.offset, s.member.size);
  }
  static absl::StatusOr<std::string> Member(const Node& node, const Fingerprint& fp,
                                            const StreamBundle& b) {
    if (auto it = b.index.find(fp); it != b.index.end()) {
      const BundleSlice& s = b.slices[it->second];
      return b.plain.substr(s.offset, s.member.size);
    }
    return absl::DataLossError(
        absl::StrCat(node.describe, ": chunk ", fp.ToHex(), ": not in the bundle sent for it"));
  }

  // The plain bytes in one GetChunks answer for `fp` (not yet hash-verified).
  static absl::StatusOr<std::string> DecodeAnswer(const Node& node, const Fingerprint& fp,
                                                  const v1::GetChunksResponse& got) {
    if (got.error_code() != 0) {
      return absl::Status(
          static_cast<absl::StatusCode>(got.error_code()),
          absl::StrCat(node.describe, ": chunk ", fp.ToHex(), ": ", got.error_message()));
    }
    const v1::Chunk& c = got.chunk();
    if (c.fingerprint() != fp.ToBytes()) {
      return absl::DataLossError(
          absl::StrCat(node.describe, ": answered another chunk for ", fp.ToHex()));
    }
    if (!KnownCodec(c.codec())) {
      return absl::DataLossError(
          absl::StrCat(node.describe, ": chunk ", fp.ToHex(), ": unknown codec ", c.codec()));
    }
    absl::StatusOr<std::string> decoded =
        Decode(static_cast<Codec>(c.codec()), c.data(), c.plain_size());
    if (!decoded.ok()) {
      return absl::DataLossError(
          absl::StrCat(node.describe, ": chunk ", fp.ToHex(), ": ", decoded.status().message()));
    }
    return decoded;
  }

  absl::StatusOr<ClusterStats> AdminStats() override {
    ClusterStats out;
    WHORL_RETURN_IF_ERROR(client_->Routed([&](const Routing& r) -> absl::Status {
      out = ClusterStats{};
      out.epoch = r.map.epoch;
      out.shards.resize(r.meta.size());
      out.chunk_nodes.resize(r.chunks.size());
      std::vector<std::vector<TenantStatsRow>> tenants(r.meta.size());
      WHORL_RETURN_IF_ERROR(ParallelFor(r.meta.size(), [&](size_t i) -> absl::Status {
        const Node& node = *r.meta[i];
        v1::ShardStatsRequest req;
        client_->FillHeader(req.mutable_header(), 0);
        v1::ShardStatsResponse resp;
        WHORL_RETURN_IF_ERROR(client_->Call(
            node, [&](grpc::ClientContext* ctx) { return node.admin->GetStats(ctx, req, &resp); }));
        out.shards[i] = ShardStatsRow{node.id,
                                      node.address,
                                      resp.unique_chunks(),
                                      resp.stored_bytes(),
                                      resp.plain_bytes(),
                                      resp.snapshots(),
                                      resp.logical_bytes()};
        for (const v1::TenantStats& t : resp.tenants()) {
          tenants[i].push_back(TenantStatsRow{t.tenant(), t.snapshots(), t.logical_bytes()});
        }
        return absl::OkStatus();
      }));
      WHORL_RETURN_IF_ERROR(ParallelFor(r.chunks.size(), [&](size_t i) -> absl::Status {
        const Node& node = *r.chunks[i];
        v1::ChunkStoreStatsRequest req;
        client_->FillHeader(req.mutable_header(), 0);
        v1::ChunkStoreStatsResponse resp;
        WHORL_RETURN_IF_ERROR(client_->Call(node, [&](grpc::ClientContext* ctx) {
          return node.chunks->GetStats(ctx, req, &resp);
        }));
        out.chunk_nodes[i] = ChunkNodeStatsRow{
            node.id,     node.address, resp.chunks(), resp.stored_bytes(), resp.plain_bytes(),
            resp.packs()};
        return absl::OkStatus();
      }));
      std::map<std::string, TenantStatsRow> by_tenant;
      for (const auto& v : tenants) {
        for (const TenantStatsRow& t : v) {
          TenantStatsRow& row = by_tenant[t.tenant];
          row.tenant = t.tenant;
          row.snapshots += t.snapshots;
          row.logical_bytes += t.logical_bytes;
        }
      }
      for (auto& [name, row] : by_tenant) out.tenants.push_back(row);
      for (const ShardStatsRow& s : out.shards) {
        out.total.snapshots += s.snapshots;
        out.total.logical_bytes += s.logical_bytes;
      }
      // Each chunk is stored on exactly one node (no replication yet): the nodes' sums are the
      // cluster's.
      for (const ChunkNodeStatsRow& c : out.chunk_nodes) {
        out.total.stored_bytes += c.stored_bytes;
        out.total.unique_chunks += c.chunks;
      }
      return absl::OkStatus();
    }));
    return out;
  }

  uint64_t fingerprints_asked() const override { return asked_; }
  uint64_t fingerprints_filtered() const override { return filtered_; }

 private:
  struct CachedFilter {
    uint64_t version = 0;
    BloomFilter filter;
  };

  // Fetches each shard's Bloom filter once per process (in parallel). A shard that cannot give
  // one is simply asked about everything.
  absl::Status EnsureFilters(const Routing& r) {
    {
      absl::MutexLock lock(&filters_mu_);
      if (filters_epoch_ == r.map.epoch) return absl::OkStatus();
      filters_.clear();
      filters_epoch_ = r.map.epoch;
    }
    return ParallelFor(r.meta.size(), [&](size_t i) -> absl::Status {
      const Node& node = *r.meta[i];
      // The copy cached by an earlier run: the shard answers "unchanged" if it is current.
      const std::string cache = FilterCachePath(node.id);
      std::optional<BloomFilter> cached;
      uint64_t cached_version = 0;
      if (!cache.empty()) {
        absl::StatusOr<std::string> bytes = ReadFile(cache, kMaxCachedFilterBytes);
        if (bytes.ok()) {
          absl::StatusOr<BloomFilter> f = BloomFilter::Parse(*bytes, &cached_version);
          if (f.ok()) cached = *std::move(f);
        }
      }
      v1::GetFilterRequest req;
      client_->FillHeader(req.mutable_header(), r.map.epoch);
      if (cached.has_value()) req.set_have_version(cached_version);
      v1::GetFilterResponse resp;
      absl::Status s = client_->Call(
          node, [&](grpc::ClientContext* ctx) { return node.index->GetFilter(ctx, req, &resp); });
      if (IsStaleEpoch(s)) return s;
      if (!s.ok()) return absl::OkStatus();  // no filter: every fingerprint is asked
      if (resp.unchanged() && cached.has_value()) {
        absl::MutexLock lock(&filters_mu_);
        filters_.insert_or_assign(node.id, CachedFilter{cached_version, *std::move(cached)});
        return absl::OkStatus();
      }
      if (resp.unchanged()) return absl::OkStatus();
      absl::StatusOr<BloomFilter> filter = BloomFilter::Parse(resp.filter());
      if (!filter.ok()) return absl::OkStatus();
      if (!cache.empty()) {
        // Best effort: a cache that cannot be written only costs the next run a download.
        std::error_code ec;
        std::filesystem::create_directories(std::filesystem::path(cache).parent_path(), ec);
        if (!ec) (void)WriteFileAtomic(cache, resp.filter());
      }
      absl::MutexLock lock(&filters_mu_);
      filters_.insert_or_assign(node.id, CachedFilter{resp.version(), *std::move(filter)});
      return absl::OkStatus();
    });
  }

  // $XDG_CACHE_HOME/whorl/filters/REPO_ID/SHARD.bloom (or ~/.cache/...); "" if neither is set.
  std::string FilterCachePath(const std::string& shard) const {
    std::string base;
    if (const char* x = std::getenv("XDG_CACHE_HOME"); x != nullptr && *x != '\0') {
      base = x;
    } else if (const char* h = std::getenv("HOME"); h != nullptr && *h != '\0') {
      base = std::string(h) + "/.cache";
    } else {
      return "";
    }
    return base + "/whorl/filters/" + config_.id + "/" + shard + ".bloom";
  }

  std::unique_ptr<ClusterClient> client_;
  const RepoConfig config_;
  absl::Mutex filters_mu_;
  uint64_t filters_epoch_ ABSL_GUARDED_BY(filters_mu_) = 0;
  std::map<std::string, CachedFilter> filters_ ABSL_GUARDED_BY(filters_mu_);
  std::atomic<uint64_t> asked_{0};
  std::atomic<uint64_t> filtered_{0};
  static constexpr size_t kDecodedBundlesKept = 32;
  static constexpr size_t kDecodedBundleBytesKept = 16 << 20;  // 8 bundles of 2 MiB
  absl::Mutex decoded_mu_;
  std::deque<std::shared_ptr<const StreamBundle>> decoded_ ABSL_GUARDED_BY(decoded_mu_);
  size_t decoded_bytes_ ABSL_GUARDED_BY(decoded_mu_) = 0;
  std::unordered_map<Fingerprint, std::pair<std::shared_ptr<const StreamBundle>, size_t>,
                     FingerprintHash>
      decoded_members_ ABSL_GUARDED_BY(decoded_mu_);
  // Last member: destroyed first, so its workers stop before what they use goes away.
  ReadAhead read_ahead_;
};

}  // namespace

bool IsRemoteUrl(std::string_view repo) {
  return repo.substr(0, kRemoteScheme.size()) == kRemoteScheme;
}

absl::Status InitRemoteRepository(const std::string& url, const RepoConfig& config,
                                  const RemoteOptions& options) {
  WHORL_RETURN_IF_ERROR(ParseUrl(url));
  ClusterClient client(url, options);
  WHORL_RETURN_IF_ERROR(client.Refresh());
  return client.Routed([&](const Routing& r) -> absl::Status {
    return ParallelFor(r.meta.size(), [&](size_t i) -> absl::Status {
      const Node& node = *r.meta[i];
      v1::InitRepositoryRequest req;
      client.FillHeader(req.mutable_header(), 0);
      req.set_config(config.ToJson());
      v1::InitRepositoryResponse resp;
      absl::Status s = client.Call(node, [&](grpc::ClientContext* ctx) {
        return node.admin->InitRepository(ctx, req, &resp);
      });
      if (absl::IsAlreadyExists(s)) {
        return absl::FailedPreconditionError("repository already exists at " + url + " (" +
                                             std::string(s.message()) + ")");
      }
      return s;
    });
  });
}

absl::StatusOr<int> UpgradeRemoteRepository(const std::string& url, const RemoteOptions& options) {
  WHORL_RETURN_IF_ERROR(ParseUrl(url));
  ClusterClient client(url, options);
  WHORL_RETURN_IF_ERROR(client.Refresh());
  int lowest = kRepoFormatVersion;
  WHORL_RETURN_IF_ERROR(client.Routed([&](const Routing& r) -> absl::Status {
    lowest = kRepoFormatVersion;
    // Every shard's config first: nothing changes unless each is one this build can raise.
    std::vector<std::string> configs(r.meta.size());
    std::vector<int> versions(r.meta.size());
    WHORL_RETURN_IF_ERROR(ParallelFor(r.meta.size(), [&](size_t i) -> absl::Status {
      const Node& node = *r.meta[i];
      v1::GetRepositoryConfigRequest req;
      client.FillHeader(req.mutable_header(), 0);
      v1::GetRepositoryConfigResponse resp;
      absl::Status s = client.Call(node, [&](grpc::ClientContext* ctx) {
        return node.admin->GetRepositoryConfig(ctx, req, &resp);
      });
      if (absl::IsNotFound(s)) {
        return absl::FailedPreconditionError(url + " is not a whorl repository (run whorl init): " +
                                             node.describe + " holds no repository config");
      }
      WHORL_RETURN_IF_ERROR(s);
      absl::StatusOr<RepoConfig> config = RepoConfig::FromJson(resp.config());
      if (!config.ok()) return Annotate(config.status(), "repository config from " + node.describe);
      configs[i] = resp.config();
      versions[i] = config->version;
      return absl::OkStatus();
    }));
    const std::string id = nlohmann::json::parse(configs[0])["id"].get<std::string>();
    for (size_t i = 0; i < configs.size(); ++i) {
      const std::string other = nlohmann::json::parse(configs[i])["id"].get<std::string>();
      if (other != id) {
        return absl::FailedPreconditionError(absl::StrCat(r.meta[i]->describe, " holds repository ",
                                                          other, ", ", r.meta[0]->describe,
                                                          " holds ", id, ": nothing upgraded"));
      }
      lowest = std::min(lowest, versions[i]);
    }
    return ParallelFor(r.meta.size(), [&](size_t i) -> absl::Status {
      if (versions[i] == kRepoFormatVersion) return absl::OkStatus();
      const Node& node = *r.meta[i];
      nlohmann::json raised = nlohmann::json::parse(configs[i]);
      raised["version"] = kRepoFormatVersion;
      v1::UpgradeRepositoryRequest req;
      client.FillHeader(req.mutable_header(), 0);
      req.set_config(raised.dump(2));
      v1::UpgradeRepositoryResponse resp;
      return client.Call(node, [&](grpc::ClientContext* ctx) {
        return node.admin->UpgradeRepository(ctx, req, &resp);
      });
    });
  }));
  return lowest;
}

absl::StatusOr<std::unique_ptr<RemoteRepository>> OpenRemoteRepository(
    const std::string& url, const RemoteOptions& options) {
  WHORL_RETURN_IF_ERROR(ParseUrl(url));
  auto client = std::make_unique<ClusterClient>(url, options);
  WHORL_RETURN_IF_ERROR(client->Refresh());
  const Node& node = client->bootstrap();
  v1::GetRepositoryConfigRequest req;
  client->FillHeader(req.mutable_header(), 0);
  v1::GetRepositoryConfigResponse resp;
  absl::Status s = client->Call(node, [&](grpc::ClientContext* ctx) {
    return node.admin->GetRepositoryConfig(ctx, req, &resp);
  });
  if (absl::IsNotFound(s)) {
    return absl::FailedPreconditionError(url + " is not a whorl repository (run whorl init)");
  }
  WHORL_RETURN_IF_ERROR(s);
  absl::StatusOr<RepoConfig> config = RepoConfig::FromJson(resp.config());
  if (!config.ok()) return Annotate(config.status(), "repository config from " + node.describe);
  return std::unique_ptr<RemoteRepository>(
      new RemoteRepositoryImpl(std::move(client), *std::move(config)));
}

}  // namespace whorl::agent
