// DecodeTree on hostile bytes (a tree object read back from a repository). Properties: it never
// crashes; a tree it accepts has only safe names, known types, 32-byte ids and strictly
// increasing names; encode(decode(x)) decodes to an equal tree and is a fixed point of encoding.
// A delta it accepts applies to a base holding the names it removes (and older versions of its
// nodes), giving a valid whole tree, from which MakeTreeDelta makes a delta that applies to the
// same tree.
#include <google/protobuf/util/message_differencer.h>

#include "agent/objects.h"
#include "common/fingerprint.h"
#include "tests/fuzz/fuzz_util.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using whorl::agent::DecodeTree;
  using whorl::agent::EncodeTree;
  absl::StatusOr<whorl::v1::Tree> tree = DecodeTree(whorl::fuzz::AsView(data, size));
  if (!tree.ok()) {
    FUZZ_CHECK(tree.status().code() == absl::StatusCode::kDataLoss ||
               tree.status().code() == absl::StatusCode::kInvalidArgument);
    return 0;
  }
  for (int i = 0; i < tree->nodes_size(); ++i) {
    const whorl::v1::Node& n = tree->nodes(i);
    FUZZ_CHECK(whorl::agent::IsValidNodeName(n.name()));
    FUZZ_CHECK(n.type() != whorl::v1::Node::TYPE_UNSPECIFIED);
    FUZZ_CHECK(n.type() != whorl::v1::Node::DIR || n.subtree().size() == whorl::Fingerprint::kSize);
    for (const std::string& c : n.chunks()) FUZZ_CHECK(c.size() == whorl::Fingerprint::kSize);
    if (i > 0) FUZZ_CHECK(tree->nodes(i - 1).name() < n.name());
  }
  whorl::v1::Tree copy = *tree;
  const std::string encoded = EncodeTree(&copy);
  absl::StatusOr<whorl::v1::Tree> again = DecodeTree(encoded);
  FUZZ_CHECK(again.ok());
  FUZZ_CHECK(google::protobuf::util::MessageDifferencer::Equals(*tree, *again));
  FUZZ_CHECK(EncodeTree(&*again) == encoded);
  if (!whorl::agent::IsTreeDelta(*tree)) return 0;
  FUZZ_CHECK(tree->base().size() == whorl::Fingerprint::kSize);
  whorl::v1::Tree base;
  for (const std::string& name : tree->removed()) {
    whorl::v1::Node* n = base.add_nodes();
    n->set_name(name);
    n->set_type(whorl::v1::Node::FIFO);
  }
  for (const whorl::v1::Node& node : tree->nodes()) {
    whorl::v1::Node* n = base.add_nodes();
    *n = node;
    n->set_size(node.size() + 1);
  }
  const std::string base_bytes = EncodeTree(&base);
  absl::StatusOr<whorl::v1::Tree> whole = whorl::agent::ApplyTreeDelta(base, *tree);
  FUZZ_CHECK(whole.ok());
  FUZZ_CHECK(!whorl::agent::IsTreeDelta(*whole));
  FUZZ_CHECK(whole->nodes_size() == tree->nodes_size());
  whorl::v1::Tree whole_copy = *whole;
  FUZZ_CHECK(DecodeTree(EncodeTree(&whole_copy)).ok());
  const whorl::v1::Tree again_delta =
      whorl::agent::MakeTreeDelta(base, whorl::Sha256(base_bytes).ToBytes(), *whole);
  absl::StatusOr<whorl::v1::Tree> rebuilt = whorl::agent::ApplyTreeDelta(base, again_delta);
  FUZZ_CHECK(rebuilt.ok());
  FUZZ_CHECK(google::protobuf::util::MessageDifferencer::Equals(*whole, *rebuilt));
  return 0;
}
