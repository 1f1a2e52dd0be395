#include "metadata-service/metadata_server.h"

#include <nlohmann/json.hpp>
#include <random>
#include <thread>

#include "absl/container/flat_hash_set.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "common/bloom_filter.h"
#include "common/status_macros.h"

namespace whorl::metadata {

using daemon::RpcScope;
using daemon::ToGrpc;

namespace {

constexpr double kFilterFpp = 0.01;
constexpr uint64_t kMinFilterCapacity = 1 << 20;

grpc::Status Invalid(const std::string& msg) {
  return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, msg);
}

// The "id" of a repository config (JSON); "" if it has none.
std::string RepositoryId(const std::string& config) {
  const nlohmann::json j = nlohmann::json::parse(config, nullptr, false);
  return j.is_object() && j.contains("id") && j["id"].is_string() ? j["id"].get<std::string>() : "";
}

}  // namespace

struct MetadataServer::State {
  MetadataStore* store = nullptr;
  daemon::ClusterState* cluster = nullptr;
  daemon::Metrics* metrics = nullptr;
  daemon::PeerClients peers;
  absl::Mutex stop_mu;
  bool stop ABSL_GUARDED_BY(stop_mu) = false;
  std::thread gauges;

  // Publishes RocksDB figures every 10 s until stopped.
  void UpdateGauges() {
    absl::MutexLock lock(&stop_mu);
    do {
      metrics->Set("whorl_rocksdb_estimate_num_keys", "RocksDB rocksdb.estimate-num-keys",
                   static_cast<double>(store->Property("rocksdb.estimate-num-keys")));
      metrics->Set("whorl_rocksdb_sst_bytes", "RocksDB rocksdb.total-sst-files-size",
                   static_cast<double>(store->Property("rocksdb.total-sst-files-size")));
      metrics->Set("whorl_rocksdb_memtable_bytes", "RocksDB rocksdb.cur-size-all-mem-tables",
                   static_cast<double>(store->Property("rocksdb.cur-size-all-mem-tables")));
      uint64_t fingerprints = 0;
      {
        absl::ReaderMutexLock lock(&filter_mu);
        fingerprints = indexed.size();
      }
      // What FindMissing's set holds in memory (GetStats sets it too, from the store).
      metrics->Set("whorl_index_chunks", "unique chunks in this shard's index",
                   static_cast<double>(fingerprints));
    } while (!stop_mu.AwaitWithTimeout(absl::Condition(&stop), absl::Seconds(10)));
  }

  // Register and Unregister each change the store and `indexed` together, one call at a time:
  // `indexed` must never hold a fingerprint the store lost (FindMissing would answer a chunk
  // that is gone "present", and no backup would store it again).
  absl::Mutex write_mu ABSL_ACQUIRED_BEFORE(filter_mu);
  absl::Mutex filter_mu;
  // Every fingerprint the store indexes (loaded at start, then kept in step by Register and
  // Unregister), so that FindMissing answers from memory. It held a Bloom filter alone before,
  // and looked each fingerprint the filter passed up in RocksDB (a MultiGet: a probe of each
  // level's filter, an index block's binary search and a data block from the cache, for every
  // present one): whorl-metad spent 2.5-2.9 us of CPU per fingerprint of whorl-bench's batches
  // (half present) on a 10M-fingerprint shard. 32 bytes a fingerprint and the table's slack,
  // ~0.5 GB for 10M: what RocksDB's block cache (kDaemonBlockCacheBytes) took to hold that
  // index's blocks, which lookups no longer read.
  absl::flat_hash_set<Fingerprint, FingerprintHash> indexed ABSL_GUARDED_BY(filter_mu);
  // The filter served to agents (GetFilter), built from `indexed`.
  std::unique_ptr<BloomFilter> filter ABSL_GUARDED_BY(filter_mu);
  uint64_t filter_capacity ABSL_GUARDED_BY(filter_mu) = 0;
  uint64_t filter_version ABSL_GUARDED_BY(filter_mu) = 0;

  absl::Status LoadIndexed() ABSL_EXCLUSIVE_LOCKS_REQUIRED(filter_mu) {
    absl::flat_hash_set<Fingerprint, FingerprintHash> all;
    WHORL_RETURN_IF_ERROR(
        store->ForEachFingerprint([&](const Fingerprint& fp) { all.insert(fp); }));
    indexed = std::move(all);
    RebuildFilter();
    return absl::OkStatus();
  }

  void RebuildFilter() ABSL_EXCLUSIVE_LOCKS_REQUIRED(filter_mu) {
    filter_capacity = std::max<uint64_t>(kMinFilterCapacity, 2 * indexed.size());
    auto f = std::make_unique<BloomFilter>(filter_capacity, kFilterFpp);
    for (const Fingerprint& fp : indexed) f->Add(fp);
    filter = std::move(f);
    filter_version = std::random_device{}() * 0x100000000ull + std::random_device{}();
  }

  // The index's answer, from `indexed`. It holds every indexed fingerprint except, for a
  // moment, one being registered right now: answering that one "missing" only costs a duplicate
  // upload, which Register ignores.
  std::vector<bool> FindMissing(const std::vector<Fingerprint>& fps) {
    std::vector<bool> missing(fps.size());
    absl::ReaderMutexLock lock(&filter_mu);
    for (size_t i = 0; i < fps.size(); ++i) missing[i] = !indexed.contains(fps[i]);
    return missing;
  }

  // FAILED_PRECONDITION unless this shard owns `fp` on the metadata ring.
  grpc::Status CheckOwner(const daemon::ClusterView& view, const Fingerprint& fp) {
    const std::string& owner = view.meta_ring->Owner(fp);
    if (owner == cluster->self()) return grpc::Status::OK;
    return grpc::Status(
        grpc::StatusCode::FAILED_PRECONDITION,
        absl::StrCat("fingerprint ", fp.ToHex(), " belongs to ", owner, ", not ", cluster->self()));
  }
};

namespace {

class IndexService final : public v1::Index::Service {
 public:
  explicit IndexService(MetadataServer::State* s) : s_(s) {}

  grpc::Status FindMissing(grpc::ServerContext* ctx, const v1::FindMissingRequest* req,
                           v1::FindMissingResponse* resp) override {
    RpcScope scope(s_->metrics, "FindMissing", ctx, req->header(), req->ByteSizeLong());
    if (grpc::Status e = s_->cluster->CheckEpoch(ctx, req->header().epoch()); !e.ok()) {
      return scope.Finish(e);
    }
    std::vector<Fingerprint> fps;
    if (grpc::Status e = daemon::ParseFingerprints(req->fingerprints(), kMaxFindMissing, &fps);
        !e.ok()) {
      return scope.Finish(e);
    }
    const auto view = s_->cluster->view();
    for (const Fingerprint& fp : fps) {
      if (grpc::Status e = s_->CheckOwner(*view, fp); !e.ok()) return scope.Finish(e);
    }
    const std::vector<bool> missing = s_->FindMissing(fps);
    uint64_t misses = 0;
    for (size_t i = 0; i < missing.size(); ++i) {
      if (missing[i]) {
        resp->add_missing(static_cast<uint32_t>(i));
        ++misses;
      }
    }
    s_->metrics->Add("whorl_findmissing_fingerprints_total", "fingerprints asked about",
                     static_cast<double>(fps.size()));
    s_->metrics->Add("whorl_findmissing_misses_total", "fingerprints answered missing",
                     static_cast<double>(misses));
    s_->metrics->Add("whorl_findmissing_hits_total", "fingerprints answered present",
                     static_cast<double>(fps.size() - misses));
    return scope.Finish(grpc::Status::OK, resp->ByteSizeLong());
  }

  grpc::Status Register(grpc::ServerContext* ctx, const v1::RegisterRequest* req,
                        v1::RegisterResponse*) override {
    RpcScope scope(s_->metrics, "Register", ctx, req->header(), req->ByteSizeLong());
    if (grpc::Status e = s_->cluster->CheckEpoch(ctx, req->header().epoch()); !e.ok()) {
      return scope.Finish(e);
    }
    if (static_cast<size_t>(req->entries_size()) > kMaxRegister) {
      return scope.Finish(grpc::Status(
          grpc::StatusCode::RESOURCE_EXHAUSTED,
          absl::StrCat("batch of ", req->entries_size(), " entries exceeds ", kMaxRegister)));
    }
    if (req->entries_size() == 0) return scope.Finish(Invalid("empty batch: no entries"));
    const auto view = s_->cluster->view();
    std::vector<std::pair<Fingerprint, IndexEntry>> entries;
    entries.reserve(req->entries_size());
    for (int i = 0; i < req->entries_size(); ++i) {
      const v1::IndexEntry& e = req->entries(i);
      absl::StatusOr<Fingerprint> fp = Fingerprint::FromBytes(e.fingerprint());
      if (!fp.ok()) {
        return scope.Finish(Invalid(absl::StrCat("entry ", i, ": fingerprint of ",
                                                 e.fingerprint().size(), " bytes, want 32")));
      }
      if (e.node().empty() || view->map.FindNode(e.node()) == nullptr) {
        return scope.Finish(
            Invalid(absl::StrCat("entry ", i, ": unknown chunk-store node \"", e.node(), "\"")));
      }
      if (grpc::Status o = s_->CheckOwner(*view, *fp); !o.ok()) return scope.Finish(o);
      entries.push_back({*fp, IndexEntry{e.stored_size(), e.plain_size(), 0, e.node()}});
    }
    const size_t asked = entries.size();
    {
      absl::MutexLock write(&s_->write_mu);
      {
        // Those indexed already are in the store: it would look each up only to skip it.
        absl::ReaderMutexLock lock(&s_->filter_mu);
        std::erase_if(entries, [&](const auto& e) { return s_->indexed.contains(e.first); });
      }
      if (entries.empty()) {
        s_->metrics->Add("whorl_index_registered_total", "index entries registered",
                         static_cast<double>(asked));
        return scope.Finish(grpc::Status::OK);
      }
      if (absl::Status st = s_->store->Register(entries); !st.ok()) {
        return scope.Finish(ToGrpc(st));
      }
      absl::MutexLock lock(&s_->filter_mu);
      for (const auto& [fp, _] : entries) {
        s_->indexed.insert(fp);
        if (!s_->filter->MayContain(fp)) {
          s_->filter->Add(fp);
          ++s_->filter_version;
        }
      }
      if (s_->filter->added() > s_->filter_capacity) s_->RebuildFilter();
    }
    s_->metrics->Add("whorl_index_registered_total", "index entries registered",
                     static_cast<double>(asked));
    return scope.Finish(grpc::Status::OK);
  }

  grpc::Status GetFilter(grpc::ServerContext* ctx, const v1::GetFilterRequest* req,
                         v1::GetFilterResponse* resp) override {
    RpcScope scope(s_->metrics, "GetFilter", ctx, req->header(), req->ByteSizeLong());
    if (grpc::Status e = s_->cluster->CheckEpoch(ctx, req->header().epoch()); !e.ok()) {
      return scope.Finish(e);
    }
    absl::MutexLock lock(&s_->filter_mu);
    resp->set_version(s_->filter_version);
    if (req->have_version() == s_->filter_version) {
      resp->set_unchanged(true);
    } else {
      resp->set_filter(s_->filter->Serialize(s_->filter_version));
    }
    return scope.Finish(grpc::Status::OK, resp->ByteSizeLong());
  }

  // Each fingerprint leaves `indexed` before the store drops it (a failed write then leaves it
  // indexed and answered missing: a duplicate upload, never a lost chunk). The Bloom filter
  // keeps it (a filter only adds), which only costs agents a FindMissing question.
  grpc::Status Unregister(grpc::ServerContext* ctx, const v1::UnregisterRequest* req,
                          v1::UnregisterResponse* resp) override {
    RpcScope scope(s_->metrics, "Unregister", ctx, req->header(), req->ByteSizeLong());
    if (grpc::Status e = s_->cluster->CheckEpoch(ctx, req->header().epoch()); !e.ok()) {
      return scope.Finish(e);
    }
    std::vector<Fingerprint> fps;
    if (grpc::Status e = daemon::ParseFingerprints(req->fingerprints(), kMaxRegister, &fps);
        !e.ok()) {
      return scope.Finish(e);
    }
    const auto view = s_->cluster->view();
    for (const Fingerprint& fp : fps) {
      if (grpc::Status e = s_->CheckOwner(*view, fp); !e.ok()) return scope.Finish(e);
    }
    {
      absl::MutexLock write(&s_->write_mu);
      {
        absl::MutexLock lock(&s_->filter_mu);
        for (const Fingerprint& fp : fps) s_->indexed.erase(fp);
      }
      if (absl::Status st = s_->store->Unregister(fps); !st.ok()) {
        return scope.Finish(ToGrpc(st));
      }
    }
    absl::StatusOr<uint64_t> generation = s_->store->RepairGeneration();
    if (!generation.ok()) return scope.Finish(ToGrpc(generation.status()));
    resp->set_repair_generation(*generation);
    daemon::Log(daemon::LogLevel::kWarn, "index entries removed by a repair",
                {{"request_id", scope.request_id()},
                 {"count", std::to_string(fps.size())},
                 {"repair_generation", std::to_string(*generation)}});
    s_->metrics->Add("whorl_index_unregistered_total", "index entries removed by repairs",
                     static_cast<double>(fps.size()));
    return scope.Finish(grpc::Status::OK, resp->ByteSizeLong());
  }

  grpc::Status GetRepairGeneration(grpc::ServerContext* ctx,
                                   const v1::GetRepairGenerationRequest* req,
                                   v1::GetRepairGenerationResponse* resp) override {
    RpcScope scope(s_->metrics, "GetRepairGeneration", ctx, req->header(), req->ByteSizeLong());
    absl::StatusOr<uint64_t> generation = s_->store->RepairGeneration();
    if (!generation.ok()) return scope.Finish(ToGrpc(generation.status()));
    resp->set_repair_generation(*generation);
    return scope.Finish(grpc::Status::OK, resp->ByteSizeLong());
  }

 private:
  MetadataServer::State* s_;
};

class CatalogService final : public v1::Catalog::Service {
 public:
  explicit CatalogService(MetadataServer::State* s) : s_(s) {}

  grpc::Status CommitSnapshot(grpc::ServerContext* ctx, const v1::CommitSnapshotRequest* req,
                              v1::CommitSnapshotResponse* resp) override {
    RpcScope scope(s_->metrics, "CommitSnapshot", ctx, req->header(), req->ByteSizeLong());
    if (grpc::Status e = s_->cluster->CheckEpoch(ctx, req->header().epoch()); !e.ok()) {
      return scope.Finish(e);
    }
    const v1::Snapshot& snap = req->snapshot();
    // A manifest file holds at most 16 MiB (agent/manifest_format.md): a larger snapshot could
    // be committed but never written out, and would bloat every ListSnapshots answer.
    constexpr size_t kMaxSnapshotBytes = 16 << 20;
    if (const size_t size = snap.ByteSizeLong(); size > kMaxSnapshotBytes) {
      return scope.Finish(
          grpc::Status(grpc::StatusCode::RESOURCE_EXHAUSTED,
                       absl::StrCat("snapshot of ", size, " bytes exceeds ", kMaxSnapshotBytes)));
    }
    absl::StatusOr<Fingerprint> root = Fingerprint::FromBytes(snap.root());
    if (!root.ok()) {
      return scope.Finish(
          Invalid(absl::StrCat("snapshot root of ", snap.root().size(), " bytes, want 32")));
    }
    // The repository id must match this shard's config, if it has one (a shard added to the
    // cluster after `whorl init` may have none yet).
    absl::StatusOr<std::string> config = s_->store->GetConfig();
    if (!config.ok() && !absl::IsNotFound(config.status())) {
      return scope.Finish(ToGrpc(config.status()));
    }
    if (config.ok()) {
      const std::string repo_id = RepositoryId(*config);
      if (snap.repository_id() != repo_id) {
        return scope.Finish(
            grpc::Status(grpc::StatusCode::FAILED_PRECONDITION,
                         absl::StrCat("snapshot of repository \"", snap.repository_id(),
                                      "\", this is \"", repo_id, "\"")));
      }
    }
    const Fingerprint id = SnapshotId(snap);
    const auto view = s_->cluster->view();
    if (grpc::Status o = s_->CheckOwner(*view, id); !o.ok()) return scope.Finish(o);
    // Invariant 2: the root tree must be indexed, by the shard that owns it.
    absl::StatusOr<bool> present = RootIndexed(ctx, *view, *root, scope.request_id());
    if (!present.ok()) return scope.Finish(ToGrpc(present.status()));
    if (!*present) {
      return scope.Finish(
          grpc::Status(grpc::StatusCode::FAILED_PRECONDITION,
                       absl::StrCat("snapshot root tree ", root->ToHex(), " is not in the index")));
    }
    absl::StatusOr<Fingerprint> stored = s_->store->CommitSnapshotUnchecked(snap);
    if (!stored.ok()) return scope.Finish(ToGrpc(stored.status()));
    resp->set_id(stored->ToBytes());
    return scope.Finish(grpc::Status::OK, resp->ByteSizeLong());
  }

  // Whether the shard owning `root` indexes it: this one, or asked by FindMissing (with the
  // caller's request id). A shard that cannot answer: UNAVAILABLE naming it.
  absl::StatusOr<bool> RootIndexed(const grpc::ServerContext* ctx, const daemon::ClusterView& view,
                                   const Fingerprint& root, const std::string& request_id) {
    const ClusterNode& node = view.map.metadata[view.meta_ring->OwnerIndex(root.Prefix64())];
    if (node.id == s_->cluster->self()) {
      WHORL_ASSIGN_OR_RETURN(std::vector<bool> missing, s_->store->FindMissing({root}));
      return !missing[0];
    }
    auto stub = v1::Index::NewStub(s_->peers.Channel(node.address));
    v1::FindMissingRequest req;
    req.mutable_header()->set_request_id(request_id);
    req.mutable_header()->set_epoch(view.map.epoch);
    req.set_fingerprints(root.ToBytes());
    v1::FindMissingResponse resp;
    absl::Status st =
        s_->peers.Call(absl::StrCat("metadata shard ", node.id, " at ", node.address),
                       daemon::PeerTimeout(ctx, std::chrono::seconds(30)), 5,
                       [&](grpc::ClientContext* c) { return stub->FindMissing(c, req, &resp); });
    if (!st.ok()) return daemon::AsUnavailable(st);
    return resp.missing_size() == 0;
  }

  grpc::Status ListSnapshots(grpc::ServerContext* ctx, const v1::ListSnapshotsRequest* req,
                             v1::ListSnapshotsResponse* resp) override {
    RpcScope scope(s_->metrics, "ListSnapshots", ctx, req->header(), req->ByteSizeLong());
    if (grpc::Status e = s_->cluster->CheckEpoch(ctx, req->header().epoch()); !e.ok()) {
      return scope.Finish(e);
    }
    absl::StatusOr<std::vector<SnapshotRecord>> snaps = s_->store->ListSnapshots();
    if (!snaps.ok()) return scope.Finish(ToGrpc(snaps.status()));
    for (const SnapshotRecord& r : *snaps) {
      v1::SnapshotEntry* e = resp->add_snapshots();
      e->set_id(r.id.ToBytes());
      *e->mutable_snapshot() = r.snapshot;
    }
    return scope.Finish(grpc::Status::OK, resp->ByteSizeLong());
  }

 private:
  MetadataServer::State* s_;
};

class AdminService final : public v1::Admin::Service {
 public:
  explicit AdminService(MetadataServer::State* s) : s_(s) {}

  grpc::Status GetClusterMap(grpc::ServerContext* ctx, const v1::GetClusterMapRequest* req,
                             v1::GetClusterMapResponse* resp) override {
    RpcScope scope(s_->metrics, "GetClusterMap", ctx, req->header(), req->ByteSizeLong());
    const auto view = s_->cluster->view();
    resp->set_epoch(view->map.epoch);
    resp->set_cluster_map(SerializeClusterMap(view->map));
    return scope.Finish(grpc::Status::OK, resp->ByteSizeLong());
  }

  grpc::Status InitRepository(grpc::ServerContext* ctx, const v1::InitRepositoryRequest* req,
                              v1::InitRepositoryResponse*) override {
    RpcScope scope(s_->metrics, "InitRepository", ctx, req->header(), req->ByteSizeLong());
    const nlohmann::json j = nlohmann::json::parse(req->config(), nullptr, false);
    if (!j.is_object() || !j.contains("id") || !j["id"].is_string() ||
        req->config().size() > (1 << 20)) {
      return scope.Finish(Invalid("repository config is not a JSON object with an id"));
    }
    return scope.Finish(ToGrpc(s_->store->PutConfig(req->config())));
  }

  grpc::Status GetRepositoryConfig(grpc::ServerContext* ctx,
                                   const v1::GetRepositoryConfigRequest* req,
                                   v1::GetRepositoryConfigResponse* resp) override {
    RpcScope scope(s_->metrics, "GetRepositoryConfig", ctx, req->header(), req->ByteSizeLong());
    absl::StatusOr<std::string> config = s_->store->GetConfig();
    if (!config.ok()) return scope.Finish(ToGrpc(config.status()));
    resp->set_config(*config);
    return scope.Finish(grpc::Status::OK, resp->ByteSizeLong());
  }

  // The new config must be the shard's with a higher "version" and nothing else changed: the
  // shard checks what it can (ids, versions, every other field) without knowing the versions
  // themselves, which are the agent's (agent/repository_format.md).
  grpc::Status UpgradeRepository(grpc::ServerContext* ctx, const v1::UpgradeRepositoryRequest* req,
                                 v1::UpgradeRepositoryResponse* resp) override {
    RpcScope scope(s_->metrics, "UpgradeRepository", ctx, req->header(), req->ByteSizeLong());
    nlohmann::json want = nlohmann::json::parse(req->config(), nullptr, false);
    if (!want.is_object() || !want.contains("id") || !want["id"].is_string() ||
        !want.contains("version") || !want["version"].is_number_unsigned() ||
        req->config().size() > (1 << 20)) {
      return scope.Finish(
          Invalid("repository config is not a JSON object with an id and a version"));
    }
    absl::StatusOr<std::string> have_text = s_->store->GetConfig();
    if (!have_text.ok()) return scope.Finish(ToGrpc(have_text.status()));
    nlohmann::json have = nlohmann::json::parse(*have_text, nullptr, false);
    if (!have.is_object() || !have.contains("version") || !have["version"].is_number_unsigned()) {
      return scope.Finish(grpc::Status(grpc::StatusCode::DATA_LOSS,
                                       "the shard's repository config has no version"));
    }
    if (have.value("id", nlohmann::json()) != want["id"]) {
      return scope.Finish(
          grpc::Status(grpc::StatusCode::FAILED_PRECONDITION,
                       absl::StrCat("config of repository ", want["id"].dump(), ", this is ",
                                    have.value("id", nlohmann::json()).dump())));
    }
    const uint64_t was = have["version"].get<uint64_t>();
    const uint64_t to = want["version"].get<uint64_t>();
    if (to < was) {
      return scope.Finish(
          grpc::Status(grpc::StatusCode::FAILED_PRECONDITION,
                       absl::StrCat("repository is version ", was, " here, newer than ", to)));
    }
    have.erase("version");
    want.erase("version");
    if (have != want) {
      return scope.Finish(Invalid("an upgrade changes the config's version alone"));
    }
    resp->set_previous_version(static_cast<uint32_t>(was));
    if (to == was) return scope.Finish(grpc::Status::OK, resp->ByteSizeLong());
    if (absl::Status st = s_->store->ReplaceConfig(*have_text, req->config()); !st.ok()) {
      return scope.Finish(ToGrpc(st));
    }
    daemon::Log(daemon::LogLevel::kInfo, "repository upgraded",
                {{"request_id", scope.request_id()},
                 {"from_version", std::to_string(was)},
                 {"to_version", std::to_string(to)}});
    return scope.Finish(grpc::Status::OK, resp->ByteSizeLong());
  }

  grpc::Status GetStats(grpc::ServerContext* ctx, const v1::ShardStatsRequest* req,
                        v1::ShardStatsResponse* resp) override {
    RpcScope scope(s_->metrics, "GetStats", ctx, req->header(), req->ByteSizeLong());
    absl::StatusOr<IndexStats> index = s_->store->Stats();
    if (!index.ok()) return scope.Finish(ToGrpc(index.status()));
    absl::StatusOr<std::vector<SnapshotRecord>> snaps = s_->store->ListSnapshots();
    if (!snaps.ok()) return scope.Finish(ToGrpc(snaps.status()));
    resp->set_shard(s_->cluster->self());
    resp->set_unique_chunks(index->unique_chunks);
    resp->set_stored_bytes(index->stored_bytes);
    resp->set_plain_bytes(index->plain_bytes);
    resp->set_snapshots(snaps->size());
    std::map<std::string, v1::TenantStats> tenants;
    uint64_t logical = 0;
    for (const SnapshotRecord& r : *snaps) {
      const uint64_t bytes = r.snapshot.summary().total_bytes_processed();
      logical += bytes;
      v1::TenantStats& t = tenants[r.snapshot.host()];
      t.set_tenant(r.snapshot.host());
      t.set_snapshots(t.snapshots() + 1);
      t.set_logical_bytes(t.logical_bytes() + bytes);
    }
    resp->set_logical_bytes(logical);
    for (auto& [name, t] : tenants) *resp->add_tenants() = t;
    s_->metrics->Set("whorl_index_chunks", "unique chunks in this shard's index",
                     static_cast<double>(index->unique_chunks));
    return scope.Finish(grpc::Status::OK, resp->ByteSizeLong());
  }

 private:
  MetadataServer::State* s_;
};

}  // namespace

absl::StatusOr<std::unique_ptr<MetadataServer>> MetadataServer::Create(
    MetadataStore* store, daemon::ClusterState* cluster, daemon::Metrics* metrics) {
  std::unique_ptr<MetadataServer> server(new MetadataServer());
  server->state_ = std::make_unique<State>();
  State* s = server->state_.get();
  s->store = store;
  s->cluster = cluster;
  s->metrics = metrics;
  {
    absl::MutexLock lock(&s->filter_mu);
    WHORL_RETURN_IF_ERROR(s->LoadIndexed());
  }
  s->gauges = std::thread([s] { s->UpdateGauges(); });
  server->services_.push_back(std::make_unique<IndexService>(s));
  server->services_.push_back(std::make_unique<CatalogService>(s));
  server->services_.push_back(std::make_unique<AdminService>(s));
  return server;
}

MetadataServer::~MetadataServer() {
  {
    absl::MutexLock lock(&state_->stop_mu);
    state_->stop = true;
  }
  if (state_->gauges.joinable()) state_->gauges.join();
}

std::vector<grpc::Service*> MetadataServer::services() {
  std::vector<grpc::Service*> out;
  for (auto& s : services_) out.push_back(s.get());
  return out;
}

}  // namespace whorl::metadata
