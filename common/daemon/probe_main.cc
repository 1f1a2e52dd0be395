// whorl-probe HOST:PORT [SERVICE]: asks a daemon's gRPC health service whether it is serving.
// Exit 0 if SERVING, 1 otherwise (the reason on stderr), 2 on usage error. For scripts
// (deploy/local-cluster.sh) and container health checks.
#include <grpcpp/grpcpp.h>

#include <chrono>
#include <iostream>
#include <string>

#include "grpc/health/v1/health.grpc.pb.h"

int main(int argc, char** argv) {
  if (argc < 2 || argc > 3) {
    std::cerr << "usage: whorl-probe HOST:PORT [SERVICE]\n";
    return 2;
  }
  auto channel = grpc::CreateChannel(argv[1], grpc::InsecureChannelCredentials());
  auto stub = grpc::health::v1::Health::NewStub(channel);
  grpc::health::v1::HealthCheckRequest req;
  if (argc == 3) req.set_service(argv[2]);
  grpc::health::v1::HealthCheckResponse resp;
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(2));
  const grpc::Status s = stub->Check(&ctx, req, &resp);
  if (!s.ok()) {
    std::cerr << "whorl-probe: " << argv[1] << ": " << s.error_message() << "\n";
    return 1;
  }
  if (resp.status() != grpc::health::v1::HealthCheckResponse::SERVING) {
    std::cerr << "whorl-probe: " << argv[1] << ": not serving\n";
    return 1;
  }
  return 0;
}
