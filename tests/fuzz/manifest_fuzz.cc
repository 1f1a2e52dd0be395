// DecodeManifestFile on hostile bytes (`restore --manifest FILE`). Properties: it never crashes;
// errors are INVALID_ARGUMENT or FAILED_PRECONDITION (another repository); a manifest it accepts
// has a 32-byte root and the expected repository id; encode(decode(x)) decodes equal and
// re-encodes to the same bytes.
#include <google/protobuf/util/message_differencer.h>

#include "agent/objects.h"
#include "common/fingerprint.h"
#include "tests/fuzz/fuzz_util.h"

namespace {
// The id the seed corpus is written with (corpus_gen.cc).
constexpr std::string_view kRepoId = "00112233445566778899aabbccddeeff";
}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using whorl::agent::DecodeManifestFile;
  using whorl::agent::EncodeManifestFile;
  absl::StatusOr<whorl::v1::Snapshot> snap =
      DecodeManifestFile(whorl::fuzz::AsView(data, size), kRepoId);
  if (!snap.ok()) {
    FUZZ_CHECK(snap.status().code() == absl::StatusCode::kInvalidArgument ||
               snap.status().code() == absl::StatusCode::kFailedPrecondition);
    return 0;
  }
  FUZZ_CHECK(snap->root().size() == whorl::Fingerprint::kSize);
  FUZZ_CHECK(snap->repository_id() == kRepoId);
  const std::string encoded = EncodeManifestFile(*snap);
  absl::StatusOr<whorl::v1::Snapshot> again = DecodeManifestFile(encoded, kRepoId);
  FUZZ_CHECK(again.ok());
  FUZZ_CHECK(google::protobuf::util::MessageDifferencer::Equals(*snap, *again));
  FUZZ_CHECK(EncodeManifestFile(*again) == encoded);
  // Another repository's id is refused, never accepted.
  FUZZ_CHECK(DecodeManifestFile(encoded, "ffeeddccbbaa99887766554433221100").status().code() ==
             absl::StatusCode::kFailedPrecondition);
  return 0;
}
