#include "chunk-store/chunk_server.h"

#include <algorithm>
#include <deque>
#include <map>
#include <thread>

#include "absl/strings/str_cat.h"
#include "common/bundle.h"
#include "common/kill_point.h"
#include "common/status_macros.h"

namespace whorl::chunkstore {
namespace {

using daemon::RpcScope;
using daemon::ToGrpc;

grpc::Status Invalid(const std::string& msg) {
  return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, msg);
}

class ChunkStoreService final : public v1::ChunkStore::Service {
 public:
  ChunkStoreService(ChunkStore* store, daemon::ClusterState* cluster, daemon::Metrics* metrics)
      : store_(store), cluster_(cluster), metrics_(metrics) {}

  grpc::Status PutChunks(grpc::ServerContext* ctx, const v1::PutChunksRequest* req,
                         v1::PutChunksResponse* resp) override {
    RpcScope scope(metrics_, "PutChunks", ctx, req->header(), req->ByteSizeLong());
    if (grpc::Status e = cluster_->CheckEpoch(ctx, req->header().epoch()); !e.ok()) {
      return scope.Finish(e);
    }
    if (static_cast<size_t>(req->chunks_size()) > kMaxPutChunks) {
      return scope.Finish(grpc::Status(
          grpc::StatusCode::RESOURCE_EXHAUSTED,
          absl::StrCat("batch of ", req->chunks_size(), " chunks exceeds ", kMaxPutChunks)));
    }
    if (req->chunks_size() == 0) return scope.Finish(Invalid("empty batch: no chunks"));
    const auto view = cluster_->view();
    std::vector<ChunkPut> puts;
    puts.reserve(req->chunks_size());
    size_t entries = 0;  // chunks, counting each member of a bundle
    for (int i = 0; i < req->chunks_size(); ++i) {
      const v1::Chunk& c = req->chunks(i);
      absl::StatusOr<Fingerprint> fp = Fingerprint::FromBytes(c.fingerprint());
      if (!fp.ok()) {
        return scope.Finish(Invalid(absl::StrCat("chunk ", i, ": fingerprint of ",
                                                 c.fingerprint().size(), " bytes, want 32")));
      }
      if (!KnownCodec(c.codec())) {
        return scope.Finish(
            Invalid(absl::StrCat("chunk ", fp->ToHex(), ": unknown codec ", c.codec())));
      }
      entries += std::max(1, c.members_size());
      if (entries > kMaxPutChunks) {
        return scope.Finish(grpc::Status(
            grpc::StatusCode::RESOURCE_EXHAUSTED,
            absl::StrCat("batch of more than ", kMaxPutChunks, " chunks (bundle members count)")));
      }
      ChunkPut put{*fp, static_cast<Codec>(c.codec()), c.plain_size(), c.data(), {}};
      for (const v1::BundleMember& m : c.members()) {
        absl::StatusOr<Fingerprint> mfp = Fingerprint::FromBytes(m.fingerprint());
        if (!mfp.ok()) {
          return scope.Finish(
              Invalid(absl::StrCat("bundle ", fp->ToHex(), ": member fingerprint of ",
                                   m.fingerprint().size(), " bytes, want 32")));
        }
        put.members.push_back({*mfp, m.size()});
      }
      if (!put.members.empty() && BundleId(put.members) != *fp) {
        return scope.Finish(Invalid(absl::StrCat(
            "bundle ", fp->ToHex(), ": fingerprint is not the SHA-256 of its member table")));
      }
      std::vector<Fingerprint> owned;
      if (put.members.empty()) owned.push_back(*fp);
      for (const BundleMember& m : put.members) owned.push_back(m.fingerprint);
      for (const Fingerprint& o : owned) {
        const std::string& owner = view->chunk_ring->Owner(o);
        if (owner != cluster_->self()) {
          return scope.Finish(grpc::Status(grpc::StatusCode::FAILED_PRECONDITION,
                                           absl::StrCat("fingerprint ", o.ToHex(), " belongs to ",
                                                        owner, ", not ", cluster_->self())));
        }
      }
      puts.push_back(std::move(put));
    }
    // Which chunks are new, for the bytes-stored metric only (a concurrent put of the same
    // chunk may make this count it twice; the store itself keeps one copy). A bundle counts as
    // new if its first member is.
    std::vector<bool> had(puts.size(), false);
    {
      std::vector<Fingerprint> fps;
      fps.reserve(puts.size());
      for (const ChunkPut& p : puts) {
        fps.push_back(p.members.empty() ? p.fingerprint : p.members[0].fingerprint);
      }
      absl::StatusOr<std::vector<bool>> c = store_->Contains(fps);
      if (c.ok()) had = *std::move(c);
    }
    // Verifies every item first (bytes must hash to the fingerprint): all or nothing.
    uint64_t added = 0;
    if (absl::Status s = store_->PutBatch(puts, &added); !s.ok()) return scope.Finish(ToGrpc(s));
    // Register all of them, not only the new ones: an earlier try may have stored a chunk and
    // died before registering it. Only then acknowledge (invariant 1).
    WHORL_KILL_POINT("chunkd.register.before");
    if (absl::Status s = Register(ctx, *view, puts, scope.request_id()); !s.ok()) {
      return scope.Finish(ToGrpc(s));
    }
    WHORL_KILL_POINT("chunkd.register.after");
    resp->set_newly_stored(added);
    uint64_t received = 0, stored = 0;
    for (size_t i = 0; i < puts.size(); ++i) {
      received += puts[i].data.size();
      if (!had[i]) stored += puts[i].data.size();
    }
    metrics_->Add("whorl_chunks_put_total", "chunks received in puts",
                  static_cast<double>(entries));
    metrics_->Add("whorl_chunks_stored_total", "chunks newly stored", static_cast<double>(added));
    metrics_->Add("whorl_chunk_bytes_received_total", "encoded bytes received in puts",
                  static_cast<double>(received));
    metrics_->Add("whorl_chunk_bytes_stored_total", "encoded bytes of newly stored chunks",
                  static_cast<double>(stored));
    return scope.Finish(grpc::Status::OK, resp->ByteSizeLong());
  }

  // Fills a GetChunks answer with `stored` (the chunk or bundle record) or its error; whether
  // it is a chunk.
  static bool Answer(const std::string& fingerprint, absl::StatusOr<ChunkStore::Stored> stored,
                     v1::GetChunksResponse* resp) {
    if (!stored.ok()) {
      resp->set_error_code(static_cast<int>(stored.status().code()));
      resp->set_error_message(std::string(stored.status().message()));
      return false;
    }
    v1::Chunk* c = resp->mutable_chunk();
    c->set_fingerprint(fingerprint);
    c->set_codec(static_cast<uint32_t>(stored->codec));
    c->set_plain_size(static_cast<uint32_t>(stored->plain_size));
    c->set_data(std::move(stored->data));
    return true;
  }

  grpc::Status GetChunks(grpc::ServerContext* ctx, const v1::GetChunksRequest* req,
                         grpc::ServerWriter<v1::GetChunksResponse>* writer) override {
    RpcScope scope(metrics_, "GetChunks", ctx, req->header(), req->ByteSizeLong());
    if (grpc::Status e = cluster_->CheckEpoch(ctx, req->header().epoch()); !e.ok()) {
      return scope.Finish(e);
    }
    if (static_cast<size_t>(req->fingerprints_size()) > kMaxGetChunks) {
      return scope.Finish(grpc::Status(grpc::StatusCode::RESOURCE_EXHAUSTED,
                                       absl::StrCat("batch of ", req->fingerprints_size(),
                                                    " fingerprints exceeds ", kMaxGetChunks)));
    }
    if (req->fingerprints_size() == 0) {
      return scope.Finish(Invalid("empty batch: no fingerprints"));
    }
    // Invariant 5: one malformed fingerprint refuses the whole batch, before any answer.
    for (int i = 0; i < req->fingerprints_size(); ++i) {
      if (req->fingerprints(i).size() != Fingerprint::kSize) {
        return scope.Finish(Invalid(
            absl::StrCat("fingerprint ", i, ": ", req->fingerprints(i).size(), " bytes, want 32")));
      }
    }
    size_t out_bytes = 0;
    // whole_bundles: the bundles sent on this stream, newest last, with their answer numbers.
    std::deque<std::pair<std::pair<uint32_t, uint64_t>, uint32_t>> sent;
    uint32_t answer = 0;
    for (const std::string& raw : req->fingerprints()) {
      ++answer;
      v1::GetChunksResponse resp;
      absl::StatusOr<Fingerprint> fp = Fingerprint::FromBytes(raw);
      if (!fp.ok()) {
        return scope.Finish(Invalid(std::string(fp.status().message())));  // checked above
      }
      absl::StatusOr<ChunkLocation> loc =
          req->whole_bundles() ? store_->Locate(*fp) : absl::StatusOr<ChunkLocation>();
      if (req->whole_bundles() && loc.ok() && loc->bundled) {
        // The bundle once per stream, as stored: the reader decodes it and slices its members,
        // which would otherwise each cost this node a slice and the wire their plain bytes.
        const std::pair<uint32_t, uint64_t> key(loc->pack_id, loc->offset);
        auto it =
            std::find_if(sent.begin(), sent.end(), [&](const auto& s) { return s.first == key; });
        if (it != sent.end()) {
          resp.set_same_bundle_as(it->second);
        } else if (Answer(raw, store_->GetBundleRecord(*fp, *loc), &resp)) {
          resp.set_bundle(true);
          if (sent.size() == kGetChunksBundlesKept) sent.pop_front();
          sent.emplace_back(key, answer);
        }
      } else {
        // As stored: the agent decodes and hash-checks every chunk anyway, so decoding here
        // would only send more bytes (a zstd chunk's plain bytes) and spend this node's CPU.
        Answer(raw, loc.ok() ? store_->GetStoredAt(*fp, *loc) : store_->GetStored(*fp), &resp);
      }
      out_bytes += resp.ByteSizeLong();
      if (!writer->Write(resp)) break;
    }
    return scope.Finish(grpc::Status::OK, out_bytes);
  }

  grpc::Status ListChunks(grpc::ServerContext* ctx, const v1::ListChunksRequest* req,
                          grpc::ServerWriter<v1::ListChunksResponse>* writer) override {
    RpcScope scope(metrics_, "ListChunks", ctx, req->header(), req->ByteSizeLong());
    if (grpc::Status e = cluster_->CheckEpoch(ctx, req->header().epoch()); !e.ok()) {
      return scope.Finish(e);
    }
    // In pack order: `check --read-data` reads them in this order, each pack front to back and
    // each bundle decoded once, not once per member as in fingerprint order.
    absl::StatusOr<std::vector<Fingerprint>> all = store_->ListInPackOrder();
    if (!all.ok()) return scope.Finish(ToGrpc(all.status()));
    v1::ListChunksResponse page;
    size_t out_bytes = 0;
    for (size_t i = 0; i < all->size(); ++i) {
      page.mutable_fingerprints()->append(reinterpret_cast<const char*>((*all)[i].bytes.data()),
                                          Fingerprint::kSize);
      if (page.fingerprints().size() >= kListPage * Fingerprint::kSize || i + 1 == all->size()) {
        out_bytes += page.ByteSizeLong();
        if (!writer->Write(page)) {
          return scope.Finish(grpc::Status(grpc::StatusCode::CANCELLED, "client went away"),
                              out_bytes);
        }
        page.Clear();
      }
    }
    return scope.Finish(grpc::Status::OK, out_bytes);
  }

  grpc::Status CheckPacks(grpc::ServerContext* ctx, const v1::CheckPacksRequest* req,
                          grpc::ServerWriter<v1::CheckPacksResponse>* writer) override {
    RpcScope scope(metrics_, "CheckPacks", ctx, req->header(), req->ByteSizeLong());
    if (grpc::Status e = cluster_->CheckEpoch(ctx, req->header().epoch()); !e.ok()) {
      return scope.Finish(e);
    }
    absl::StatusOr<std::vector<PackProblem>> problems = store_->CheckPacks();
    if (!problems.ok()) return scope.Finish(ToGrpc(problems.status()));
    size_t out_bytes = 0;
    for (const PackProblem& p : *problems) {
      size_t next = 0;
      do {  // at least one message per pack, even with nothing lost
        v1::CheckPacksResponse resp;
        resp.set_pack_id(p.pack_id);
        resp.set_problem(p.problem);
        for (size_t n = 0; n < kListPage && next < p.lost.size(); ++n, ++next) {
          resp.mutable_lost()->append(p.lost[next].ToBytes());
        }
        out_bytes += resp.ByteSizeLong();
        if (!writer->Write(resp)) return scope.Finish(grpc::Status::CANCELLED, out_bytes);
      } while (next < p.lost.size());
    }
    return scope.Finish(grpc::Status::OK, out_bytes);
  }

  // `whorl repair`'s first step. Reads what it asks to forget, from the packs (not a bundle
  // decoded before the damage), and forgets only the chunks that fail: a caller that is wrong,
  // or a chunk that reads whole again, never costs a stored chunk.
  grpc::Status ForgetChunks(grpc::ServerContext* ctx, const v1::ForgetChunksRequest* req,
                            v1::ForgetChunksResponse* resp) override {
    RpcScope scope(metrics_, "ForgetChunks", ctx, req->header(), req->ByteSizeLong());
    if (grpc::Status e = cluster_->CheckEpoch(ctx, req->header().epoch()); !e.ok()) {
      return scope.Finish(e);
    }
    std::vector<Fingerprint> fps;
    if (grpc::Status e = daemon::ParseFingerprints(req->fingerprints(), kMaxGetChunks, &fps);
        !e.ok()) {
      return scope.Finish(e);
    }
    store_->ForgetDecoded();
    std::vector<Fingerprint> unreadable;
    for (const Fingerprint& fp : fps) {
      if (absl::StatusOr<ChunkLocation> loc = store_->Locate(fp); !loc.ok()) {
        if (absl::IsNotFound(loc.status())) continue;  // not here: nothing to forget
        return scope.Finish(ToGrpc(loc.status()));
      }
      const absl::Status read = store_->Read(fp, [&fp](std::string_view plain) {
        return ChunkSha256(plain) == fp
                   ? absl::OkStatus()
                   : absl::DataLossError("data does not hash to its fingerprint");
      });
      if (read.ok()) {
        resp->mutable_kept()->append(fp.ToBytes());
      } else {
        unreadable.push_back(fp);
        resp->mutable_forgotten()->append(fp.ToBytes());
      }
    }
    if (!unreadable.empty()) {
      if (absl::Status s = store_->Forget(unreadable); !s.ok()) return scope.Finish(ToGrpc(s));
      daemon::Log(
          daemon::LogLevel::kWarn, "unreadable chunks forgotten by a repair",
          {{"request_id", scope.request_id()}, {"count", std::to_string(unreadable.size())}});
      metrics_->Add("whorl_chunks_forgotten_total", "unreadable chunks forgotten by repairs",
                    static_cast<double>(unreadable.size()));
    }
    return scope.Finish(grpc::Status::OK, resp->ByteSizeLong());
  }

  grpc::Status GetStats(grpc::ServerContext* ctx, const v1::ChunkStoreStatsRequest* req,
                        v1::ChunkStoreStatsResponse* resp) override {
    RpcScope scope(metrics_, "GetStats", ctx, req->header(), req->ByteSizeLong());
    absl::StatusOr<ChunkStoreStats> st = store_->Stats();
    if (!st.ok()) return scope.Finish(ToGrpc(st.status()));
    resp->set_node(cluster_->self());
    resp->set_chunks(st->chunks);
    resp->set_stored_bytes(st->stored_bytes);
    resp->set_plain_bytes(st->plain_bytes);
    resp->set_packs(st->packs);
    PublishStats(*st);
    return scope.Finish(grpc::Status::OK, resp->ByteSizeLong());
  }

  // Store-wide gauges (a locator scan: set at start and on every GetStats, not per put).
  void PublishStats(const ChunkStoreStats& st) {
    metrics_->Set("whorl_store_chunks", "unique chunks stored", static_cast<double>(st.chunks));
    metrics_->Set("whorl_store_bytes", "bytes the chunks take in packs (headers included)",
                  static_cast<double>(st.stored_bytes));
    metrics_->Set("whorl_store_plain_bytes", "plain bytes of the chunks stored",
                  static_cast<double>(st.plain_bytes));
    metrics_->Set("whorl_store_packs", "pack files", static_cast<double>(st.packs));
  }

 private:
  // Registers `puts` with their owning metadata shards, all shards in parallel.
  // A shard that cannot take them: UNAVAILABLE "metadata shard ID at ADDR: ..." (the chunks
  // stay stored but are not acknowledged; the agent's retry registers them).
  absl::Status Register(const grpc::ServerContext* ctx, const daemon::ClusterView& view,
                        const std::vector<ChunkPut>& puts, const std::string& request_id) {
    const auto timeout = daemon::PeerTimeout(ctx, std::chrono::seconds(30));
    std::map<size_t, v1::RegisterRequest> by_shard;
    auto add = [&](const Fingerprint& fp, uint32_t stored_size, uint32_t plain_size) {
      const size_t shard = view.meta_ring->OwnerIndex(fp.Prefix64());
      v1::IndexEntry* e = by_shard[shard].add_entries();
      e->set_fingerprint(fp.ToBytes());
      e->set_stored_size(stored_size);
      e->set_plain_size(plain_size);
      e->set_node(cluster_->self());
    };
    for (const ChunkPut& p : puts) {
      if (p.members.empty()) {
        add(p.fingerprint, static_cast<uint32_t>(p.data.size()),
            static_cast<uint32_t>(p.plain_size));
        continue;
      }
      // Each member of a bundle counts its share of the bundle's stored bytes.
      const std::vector<uint32_t> shares = ApportionBytes(p.data.size(), p.members);
      for (size_t i = 0; i < p.members.size(); ++i) {
        add(p.members[i].fingerprint, shares[i], p.members[i].size);
      }
    }
    std::vector<std::pair<size_t, v1::RegisterRequest*>> calls;
    for (auto& [shard, req] : by_shard) {
      req.mutable_header()->set_request_id(request_id);
      req.mutable_header()->set_epoch(view.map.epoch);
      calls.push_back({shard, &req});
    }
    std::vector<absl::Status> results(calls.size());
    auto call = [&](size_t i) {
      const ClusterNode& node = view.map.metadata[calls[i].first];
      auto stub = v1::Index::NewStub(peers_.Channel(node.address));
      v1::RegisterResponse resp;
      results[i] = peers_.Call(
          absl::StrCat("metadata shard ", node.id, " at ", node.address), timeout, 5,
          [&](grpc::ClientContext* c) { return stub->Register(c, *calls[i].second, &resp); });
    };
    // The first call runs on this thread: a batch owned by one shard starts no thread, and a
    // backup's PutChunks to a cluster of N shards start N - 1 each, not N.
    std::vector<std::thread> threads;
    for (size_t i = 1; i < calls.size(); ++i) threads.emplace_back(call, i);
    if (!calls.empty()) call(0);
    for (auto& t : threads) t.join();
    for (const absl::Status& s : results) {
      if (!s.ok()) return daemon::AsUnavailable(s);
    }
    return absl::OkStatus();
  }

  ChunkStore* store_;
  daemon::ClusterState* cluster_;
  daemon::Metrics* metrics_;
  daemon::PeerClients peers_;
};

}  // namespace

std::unique_ptr<grpc::Service> NewChunkStoreService(ChunkStore* store,
                                                    daemon::ClusterState* cluster,
                                                    daemon::Metrics* metrics) {
  auto service = std::make_unique<ChunkStoreService>(store, cluster, metrics);
  if (absl::StatusOr<ChunkStoreStats> st = store->Stats(); st.ok()) service->PublishStats(*st);
  return service;
}

}  // namespace whorl::chunkstore
