// The request validation of every RPC of whorl-metad and whorl-chunkd, against the real
// service implementations over real RocksDB stores in a scratch directory: a one-shard,
// one-chunk-store cluster in this process. The metadata shard listens on 127.0.0.1 (the chunk
// store registers puts with it over gRPC, as in a cluster); unary methods are called directly
// as virtual methods with a default ServerContext; the streaming methods go through the
// chunk store's in-process channel.
//
// Input: up to 16 frames of [method byte][length, 2 bytes little-endian][request bytes]; a
// frame whose bytes do not parse as the method's request is skipped (gRPC refuses those).
// Properties, on top of "never crashes, leaks or trips a sanitizer":
// - no RPC answers UNKNOWN, INTERNAL, DATA_LOSS or UNAVAILABLE (a hostile request is a client
//   error, not a server fault);
// - a refused PutChunks or Register changes no count (design.md invariant 5: all or nothing);
// - after an accepted PutChunks every chunk reads back and hashes to its fingerprint, and the
//   shard's index has it (invariants 1 and 3);
// - after an accepted Register, FindMissing reports every entry present;
// - an accepted CommitSnapshot's root is in the index (invariant 2) and the snapshot is listed;
// - FindMissing's indexes ascend and stay in range; GetFilter's filter parses;
// - CheckPacks finds no damaged pack (no request can damage one), so ForgetChunks, which
//   forgets only chunks that fail to read, forgets nothing;
// - after an accepted Unregister, FindMissing reports every fingerprint of it missing and the
//   shard's repair generation went up by one.
#include <grpcpp/grpcpp.h>

#include <fstream>
#include <map>

#include "chunk-store/chunk_server.h"
#include "chunk-store/chunk_store.h"
#include "common/bloom_filter.h"
#include "common/bundle.h"
#include "common/codec.h"
#include "common/daemon/daemon.h"
#include "metadata-service/metadata_server.h"
#include "metadata-service/metadata_store.h"
#include "tests/fuzz/fuzz_util.h"

namespace {

namespace v1 = whorl::v1;
namespace wd = whorl::daemon;
using whorl::Fingerprint;

void WriteMap(const std::string& path, int meta_port) {
  std::ofstream(path) << R"({"format": 1, "epoch": 7, "vnodes_per_weight": 16,
    "metadata": [{"id": "meta-1", "address": "127.0.0.1:)"
                      << meta_port << R"("}],
    "chunkstores": [{"id": "chunk-1", "address": "127.0.0.1:1"}]})";
}

void Ok(const absl::Status& s) {
  if (!s.ok()) {
    std::fprintf(stderr, "rpc_fuzz setup: %s\n", s.ToString().c_str());
    std::abort();
  }
}

template <typename T>
T* Must(absl::StatusOr<std::unique_ptr<T>> p, std::vector<std::shared_ptr<void>>* keep) {
  Ok(p.status());
  keep->push_back(std::shared_ptr<T>(std::move(*p)));
  return static_cast<T*>(keep->back().get());
}

// The cluster, built once per process. Never destroyed: the stores stay open until exit.
struct Cluster {
  std::vector<std::shared_ptr<void>> keep;  // everything below points into these
  v1::Index::Service* index;
  v1::Catalog::Service* catalog;
  v1::Admin::Service* admin;
  v1::ChunkStore::Service* chunks;
  std::unique_ptr<v1::ChunkStore::Stub> chunk_stub;  // in-process, for the streaming methods

  Cluster() {
    wd::SetUpLogging("text", "off");
    const std::string dir = whorl::fuzz::ScratchDir();
    WriteMap(dir + "/meta-map.json", 1);
    auto* meta_cluster =
        Must(wd::ClusterState::Load(dir + "/meta-map.json", "meta-1", wd::Role::kMetadata), &keep);
    auto* metrics = Must(wd::Metrics::Create(""), &keep);
    auto* meta_store = Must(whorl::metadata::MetadataStore::Open(dir + "/meta"), &keep);
    auto* meta =
        Must(whorl::metadata::MetadataServer::Create(meta_store, meta_cluster, metrics), &keep);
    int port = 0;
    Must(wd::StartServer("127.0.0.1:0", meta->services(), &port), &keep);
    index = dynamic_cast<v1::Index::Service*>(meta->services()[0]);
    catalog = dynamic_cast<v1::Catalog::Service*>(meta->services()[1]);
    admin = dynamic_cast<v1::Admin::Service*>(meta->services()[2]);
    FUZZ_CHECK(index != nullptr && catalog != nullptr && admin != nullptr);

    // The chunk store's map has the shard's real port (same epoch; nothing else differs).
    WriteMap(dir + "/chunk-map.json", port);
    auto* chunk_cluster = Must(
        wd::ClusterState::Load(dir + "/chunk-map.json", "chunk-1", wd::Role::kChunkStore), &keep);
    whorl::chunkstore::ChunkStoreOptions options;
    options.verify_puts = true;  // as whorl-chunkd
    auto* store = Must(whorl::chunkstore::ChunkStore::Open(dir + "/chunks", options), &keep);
    std::shared_ptr<grpc::Service> owned_service =
        whorl::chunkstore::NewChunkStoreService(store, chunk_cluster, metrics);
    keep.push_back(owned_service);
    grpc::Service* chunk_service = owned_service.get();
    chunks = dynamic_cast<v1::ChunkStore::Service*>(chunk_service);
    FUZZ_CHECK(chunks != nullptr);
    grpc::ServerBuilder builder;
    builder.RegisterService(chunk_service);
    builder.SetMaxReceiveMessageSize(wd::kMaxMessageBytes);
    builder.SetMaxSendMessageSize(wd::kMaxMessageBytes);
    std::shared_ptr<grpc::Server> server = builder.BuildAndStart();
    FUZZ_CHECK(server != nullptr);
    keep.push_back(server);
    grpc::ChannelArguments args;
    args.SetMaxReceiveMessageSize(wd::kMaxMessageBytes);
    chunk_stub = v1::ChunkStore::NewStub(server->InProcessChannel(args));
  }
};

void CheckCode(const grpc::Status& s) {
  const grpc::StatusCode c = s.error_code();
  static const bool verbose = std::getenv("WHORL_FUZZ_VERBOSE") != nullptr;
  if (verbose) std::fprintf(stderr, "rpc: %d %s\n", static_cast<int>(c), s.error_message().c_str());
  if (c == grpc::StatusCode::UNKNOWN || c == grpc::StatusCode::INTERNAL ||
      c == grpc::StatusCode::DATA_LOSS || c == grpc::StatusCode::UNAVAILABLE) {
    std::fprintf(stderr, "server fault on a hostile request: %d %s\n", static_cast<int>(c),
                 s.error_message().c_str());
    std::abort();
  }
}

uint64_t IndexedChunks(Cluster& c) {
  grpc::ServerContext ctx;
  v1::ShardStatsRequest req;
  v1::ShardStatsResponse resp;
  FUZZ_CHECK(c.admin->GetStats(&ctx, &req, &resp).ok());
  return resp.unique_chunks();
}

uint64_t StoredChunks(Cluster& c) {
  grpc::ServerContext ctx;
  v1::ChunkStoreStatsRequest req;
  v1::ChunkStoreStatsResponse resp;
  FUZZ_CHECK(c.chunks->GetStats(&ctx, &req, &resp).ok());
  return resp.chunks();
}

// The indexes of `fps` (concatenated fingerprints) the shard reports missing.
std::vector<uint32_t> Missing(Cluster& c, const std::string& fps) {
  grpc::ServerContext ctx;
  v1::FindMissingRequest req;
  req.set_fingerprints(fps);
  v1::FindMissingResponse resp;
  FUZZ_CHECK(c.index->FindMissing(&ctx, &req, &resp).ok());
  return {resp.missing().begin(), resp.missing().end()};
}

std::vector<v1::GetChunksResponse> GetChunks(Cluster& c, const v1::GetChunksRequest& req,
                                             grpc::Status* status) {
  grpc::ClientContext ctx;
  std::unique_ptr<grpc::ClientReader<v1::GetChunksResponse>> reader =
      c.chunk_stub->GetChunks(&ctx, req);
  std::vector<v1::GetChunksResponse> out;
  v1::GetChunksResponse resp;
  while (reader->Read(&resp)) out.push_back(resp);
  *status = reader->Finish();
  return out;
}

template <typename Req>
bool Parse(std::string_view bytes, Req* req) {
  return req->ParseFromArray(bytes.data(), static_cast<int>(bytes.size()));
}

void PutChunks(Cluster& c, std::string_view bytes) {
  v1::PutChunksRequest req;
  if (!Parse(bytes, &req)) return;
  const uint64_t stored = StoredChunks(c), indexed = IndexedChunks(c);
  grpc::ServerContext ctx;
  v1::PutChunksResponse resp;
  const grpc::Status s = c.chunks->PutChunks(&ctx, &req, &resp);
  CheckCode(s);
  if (!s.ok()) {
    FUZZ_CHECK(StoredChunks(c) == stored && IndexedChunks(c) == indexed);
    return;
  }
  FUZZ_CHECK(StoredChunks(c) == stored + resp.newly_stored());
  v1::GetChunksRequest get;
  std::string fps;
  for (const v1::Chunk& chunk : req.chunks()) {
    get.add_fingerprints(chunk.fingerprint());
    fps += chunk.fingerprint();
  }
  grpc::Status gs;
  const std::vector<v1::GetChunksResponse> got = GetChunks(c, get, &gs);
  FUZZ_CHECK(gs.ok() && got.size() == static_cast<size_t>(req.chunks_size()));
  for (size_t i = 0; i < got.size(); ++i) {
    FUZZ_CHECK(got[i].has_chunk());
    // As stored: decoded here, as the agent decodes it.
    const v1::Chunk& g = got[i].chunk();
    FUZZ_CHECK(whorl::KnownCodec(g.codec()));
    const absl::StatusOr<std::string> plain =
        whorl::Decode(static_cast<whorl::Codec>(g.codec()), g.data(), g.plain_size());
    FUZZ_CHECK(plain.ok() && whorl::Sha256(*plain).ToBytes() == req.chunks(i).fingerprint());
  }
  // The same with whole_bundles: each answer is the chunk, a bundle holding it, or a reference
  // to a bundle sent earlier on the stream that holds it.
  get.set_whole_bundles(true);
  const std::vector<v1::GetChunksResponse> whole = GetChunks(c, get, &gs);
  FUZZ_CHECK(gs.ok() && whole.size() == got.size());
  std::map<uint32_t, std::string> bundles;  // answer number -> decoded bundle
  for (size_t i = 0; i < whole.size(); ++i) {
    const std::string& want = req.chunks(i).fingerprint();
    std::string bundle;
    if (whole[i].same_bundle_as() != 0) {
      FUZZ_CHECK(!whole[i].has_chunk() && bundles.contains(whole[i].same_bundle_as()));
      bundle = bundles[whole[i].same_bundle_as()];
    } else {
      FUZZ_CHECK(whole[i].has_chunk() && whole[i].chunk().fingerprint() == want);
      const v1::Chunk& g = whole[i].chunk();
      FUZZ_CHECK(whorl::KnownCodec(g.codec()));
      absl::StatusOr<std::string> plain =
          whorl::Decode(static_cast<whorl::Codec>(g.codec()), g.data(), g.plain_size());
      FUZZ_CHECK(plain.ok());
      if (!whole[i].bundle()) {
        FUZZ_CHECK(whorl::Sha256(*plain).ToBytes() == want);
        continue;
      }
      bundle = *plain;
      bundles[static_cast<uint32_t>(i + 1)] = bundle;
    }
    absl::StatusOr<std::vector<whorl::BundleSlice>> slices = whorl::ParseBundle(bundle);
    FUZZ_CHECK(slices.ok());
    bool found = false;
    for (const whorl::BundleSlice& s : *slices) {
      if (s.member.fingerprint.ToBytes() != want) continue;
      found =
          whorl::Sha256(std::string_view(bundle).substr(s.offset, s.member.size)).ToBytes() == want;
    }
    FUZZ_CHECK(found);
  }
  FUZZ_CHECK(Missing(c, fps).empty());
}

void Register(Cluster& c, std::string_view bytes) {
  v1::RegisterRequest req;
  if (!Parse(bytes, &req)) return;
  const uint64_t indexed = IndexedChunks(c);
  grpc::ServerContext ctx;
  v1::RegisterResponse resp;
  const grpc::Status s = c.index->Register(&ctx, &req, &resp);
  CheckCode(s);
  if (!s.ok()) {
    FUZZ_CHECK(IndexedChunks(c) == indexed);
    return;
  }
  std::string fps;
  for (const v1::IndexEntry& e : req.entries()) fps += e.fingerprint();
  FUZZ_CHECK(Missing(c, fps).empty());
}

void FindMissing(Cluster& c, std::string_view bytes) {
  v1::FindMissingRequest req;
  if (!Parse(bytes, &req)) return;
  grpc::ServerContext ctx;
  v1::FindMissingResponse resp;
  const grpc::Status s = c.index->FindMissing(&ctx, &req, &resp);
  CheckCode(s);
  if (!s.ok()) return;
  const size_t n = req.fingerprints().size() / Fingerprint::kSize;
  for (int i = 0; i < resp.missing_size(); ++i) {
    FUZZ_CHECK(resp.missing(i) < n);
    if (i > 0) FUZZ_CHECK(resp.missing(i - 1) < resp.missing(i));
  }
}

void GetFilter(Cluster& c, std::string_view bytes) {
  v1::GetFilterRequest req;
  if (!Parse(bytes, &req)) return;
  grpc::ServerContext ctx;
  v1::GetFilterResponse resp;
  const grpc::Status s = c.index->GetFilter(&ctx, &req, &resp);
  CheckCode(s);
  if (s.ok() && !resp.unchanged()) {
    uint64_t version = 0;
    FUZZ_CHECK(whorl::BloomFilter::Parse(resp.filter(), &version).ok());
    FUZZ_CHECK(version == resp.version());
  }
}

void CommitSnapshot(Cluster& c, std::string_view bytes) {
  v1::CommitSnapshotRequest req;
  if (!Parse(bytes, &req)) return;
  grpc::ServerContext ctx;
  v1::CommitSnapshotResponse resp;
  const grpc::Status s = c.catalog->CommitSnapshot(&ctx, &req, &resp);
  CheckCode(s);
  if (!s.ok()) return;
  FUZZ_CHECK(Missing(c, req.snapshot().root()).empty());
  grpc::ServerContext lctx;
  v1::ListSnapshotsRequest list;
  v1::ListSnapshotsResponse listed;
  FUZZ_CHECK(c.catalog->ListSnapshots(&lctx, &list, &listed).ok());
  bool found = false;
  for (const v1::SnapshotEntry& e : listed.snapshots()) found = found || e.id() == resp.id();
  FUZZ_CHECK(found);
}

// The methods whose only property is an acceptable status code.
void Plain(Cluster& c, int method, std::string_view bytes) {
  grpc::ServerContext ctx;
  grpc::Status s;
  switch (method) {
    case 0: {
      v1::ListSnapshotsRequest req;
      v1::ListSnapshotsResponse resp;
      if (!Parse(bytes, &req)) return;
      s = c.catalog->ListSnapshots(&ctx, &req, &resp);
      break;
    }
    case 1: {
      v1::GetClusterMapRequest req;
      v1::GetClusterMapResponse resp;
      if (!Parse(bytes, &req)) return;
      s = c.admin->GetClusterMap(&ctx, &req, &resp);
      FUZZ_CHECK(s.ok() && whorl::ParseClusterMap(resp.cluster_map()).ok());
      break;
    }
    case 2: {
      v1::InitRepositoryRequest req;
      v1::InitRepositoryResponse resp;
      if (!Parse(bytes, &req)) return;
      s = c.admin->InitRepository(&ctx, &req, &resp);
      break;
    }
    case 3: {
      v1::GetRepositoryConfigRequest req;
      v1::GetRepositoryConfigResponse resp;
      if (!Parse(bytes, &req)) return;
      s = c.admin->GetRepositoryConfig(&ctx, &req, &resp);
      break;
    }
    case 4: {
      v1::ShardStatsRequest req;
      v1::ShardStatsResponse resp;
      if (!Parse(bytes, &req)) return;
      s = c.admin->GetStats(&ctx, &req, &resp);
      break;
    }
    case 5: {
      v1::ChunkStoreStatsRequest req;
      v1::ChunkStoreStatsResponse resp;
      if (!Parse(bytes, &req)) return;
      s = c.chunks->GetStats(&ctx, &req, &resp);
      break;
    }
    case 6: {
      v1::GetChunksRequest req;
      if (!Parse(bytes, &req)) return;
      const std::vector<v1::GetChunksResponse> got = GetChunks(c, req, &s);
      if (s.ok()) FUZZ_CHECK(got.size() == static_cast<size_t>(req.fingerprints_size()));
      break;
    }
    case 7: {
      v1::ListChunksRequest req;
      if (!Parse(bytes, &req)) return;
      grpc::ClientContext cctx;
      auto reader = c.chunk_stub->ListChunks(&cctx, req);
      v1::ListChunksResponse resp;
      while (reader->Read(&resp)) FUZZ_CHECK(resp.fingerprints().size() % Fingerprint::kSize == 0);
      s = reader->Finish();
      break;
    }
    case 8: {
      v1::CheckPacksRequest req;
      if (!Parse(bytes, &req)) return;
      grpc::ClientContext cctx;
      auto reader = c.chunk_stub->CheckPacks(&cctx, req);
      v1::CheckPacksResponse resp;
      FUZZ_CHECK(!reader->Read(&resp));
      s = reader->Finish();
      break;
    }
  }
  CheckCode(s);
}

uint64_t RepairGeneration(Cluster& c) {
  grpc::ServerContext ctx;
  v1::GetRepairGenerationRequest req;
  v1::GetRepairGenerationResponse resp;
  FUZZ_CHECK(c.index->GetRepairGeneration(&ctx, &req, &resp).ok());
  return resp.repair_generation();
}

void Unregister(Cluster& c, std::string_view bytes) {
  v1::UnregisterRequest req;
  if (!Parse(bytes, &req)) return;
  const uint64_t generation = RepairGeneration(c);
  grpc::ServerContext ctx;
  v1::UnregisterResponse resp;
  const grpc::Status s = c.index->Unregister(&ctx, &req, &resp);
  CheckCode(s);
  if (!s.ok()) {
    FUZZ_CHECK(RepairGeneration(c) == generation);
    return;
  }
  FUZZ_CHECK(resp.repair_generation() == generation + 1);
  FUZZ_CHECK(RepairGeneration(c) == generation + 1);
  FUZZ_CHECK(Missing(c, req.fingerprints()).size() ==
             req.fingerprints().size() / Fingerprint::kSize);
}

void ForgetChunks(Cluster& c, std::string_view bytes) {
  v1::ForgetChunksRequest req;
  if (!Parse(bytes, &req)) return;
  const uint64_t stored = StoredChunks(c);
  grpc::ServerContext ctx;
  v1::ForgetChunksResponse resp;
  const grpc::Status s = c.chunks->ForgetChunks(&ctx, &req, &resp);
  CheckCode(s);
  FUZZ_CHECK(resp.forgotten().empty());
  FUZZ_CHECK(StoredChunks(c) == stored);
  FUZZ_CHECK(resp.kept().size() % Fingerprint::kSize == 0);
}

// A refused upgrade leaves the config as it was; an accepted one changes at most its version.
void UpgradeRepository(Cluster& c, std::string_view bytes) {
  v1::UpgradeRepositoryRequest req;
  if (!Parse(bytes, &req)) return;
  auto config = [&c]() {
    grpc::ServerContext ctx;
    v1::GetRepositoryConfigRequest get;
    v1::GetRepositoryConfigResponse got;
    return c.admin->GetRepositoryConfig(&ctx, &get, &got).ok() ? got.config() : std::string();
  };
  const std::string before = config();
  grpc::ServerContext ctx;
  v1::UpgradeRepositoryResponse resp;
  const grpc::Status s = c.admin->UpgradeRepository(&ctx, &req, &resp);
  CheckCode(s);
  if (!s.ok()) {
    FUZZ_CHECK(config() == before);
    return;
  }
  FUZZ_CHECK(!before.empty());
  const std::string after = config();
  FUZZ_CHECK(after == before || after == req.config());
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static Cluster* cluster = new Cluster();
  std::string_view in = whorl::fuzz::AsView(data, size);
  for (int frame = 0; frame < 16 && in.size() >= 3; ++frame) {
    const int method = static_cast<uint8_t>(in[0]) % 18;
    const size_t len =
        std::min<size_t>(in.size() - 3, static_cast<uint8_t>(in[1]) |
                                            static_cast<size_t>(static_cast<uint8_t>(in[2])) << 8);
    const std::string_view bytes = in.substr(3, len);
    in.remove_prefix(3 + len);
    switch (method) {
      case 0:
        PutChunks(*cluster, bytes);
        break;
      case 1:
        Register(*cluster, bytes);
        break;
      case 2:
        FindMissing(*cluster, bytes);
        break;
      case 3:
        GetFilter(*cluster, bytes);
        break;
      case 4:
        CommitSnapshot(*cluster, bytes);
        break;
      case 14:
        Unregister(*cluster, bytes);
        break;
      case 15:
        ForgetChunks(*cluster, bytes);
        break;
      case 16: {
        v1::GetRepairGenerationRequest req;
        if (!Parse(bytes, &req)) break;
        grpc::ServerContext ctx;
        v1::GetRepairGenerationResponse resp;
        CheckCode(cluster->index->GetRepairGeneration(&ctx, &req, &resp));
        break;
      }
      case 17:
        UpgradeRepository(*cluster, bytes);
        break;
      default:
        Plain(*cluster, method - 5, bytes);
        break;
    }
  }
  return 0;
}
