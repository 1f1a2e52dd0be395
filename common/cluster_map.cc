#include "common/cluster_map.h"

#include <cctype>
#include <limits>
#include <map>

#include "absl/strings/str_cat.h"
#include "common/file_util.h"
#include "common/status_macros.h"
#include "nlohmann/json.hpp"

namespace whorl {
namespace {

using Json = nlohmann::json;

// A map that omits "vnodes_per_weight" means this value, forever: changing it would move keys
// in every cluster whose map relies on the default. A new default needs a new format.
constexpr int kFormat1DefaultVnodesPerWeight = 2000;
static_assert(HashRing::kDefaultVnodesPerWeight == kFormat1DefaultVnodesPerWeight,
              "the ring default is pinned by cluster map format 1; see cluster_map_format.md");

constexpr int kMaxVnodesPerWeight = 1 << 16;
constexpr size_t kMaxIdLength = 128;

absl::Status Invalid(std::string_view field, std::string_view problem) {
  return absl::InvalidArgumentError(
      absl::StrCat("cluster map: ", std::string(field), ": ", std::string(problem)));
}

bool IsIdChar(char c) {
  return std::isalnum(static_cast<unsigned char>(c)) || c == '.' || c == '_' || c == '-';
}

absl::Status ValidateId(std::string_view field, std::string_view id) {
  if (id.empty()) return Invalid(field, "missing or empty id");
  if (id.size() > kMaxIdLength) return Invalid(field, "id longer than 128 characters");
  for (char c : id) {
    if (!IsIdChar(c)) {
      return Invalid(field,
                     absl::StrCat("id \"", std::string(id), "\" may use only A-Z a-z 0-9 . _ -"));
    }
  }
  return absl::OkStatus();
}

bool IsHostChar(char c) {
  return std::isalnum(static_cast<unsigned char>(c)) || c == '.' || c == '_' || c == '-';
}

bool IsBracketedHostChar(char c) {
  return std::isxdigit(static_cast<unsigned char>(c)) || c == ':' || c == '.';
}

// HOST:PORT, where HOST is a name or IPv4 address, or an IPv6 address in brackets.
absl::Status ValidateAddress(std::string_view field, std::string_view address) {
  const auto bad = [&](std::string_view why) {
    return Invalid(field, absl::StrCat("\"", std::string(address), "\" is not HOST:PORT (",
                                       std::string(why), ")"));
  };
  const size_t colon = address.rfind(':');
  if (colon == std::string_view::npos) return bad("no port");
  std::string_view host = address.substr(0, colon);
  const std::string_view port = address.substr(colon + 1);
  bool bracketed = false;
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']') {
    host = host.substr(1, host.size() - 2);
    bracketed = true;
  }
  if (host.empty()) return bad("empty host");
  for (char c : host) {
    if (!(bracketed ? IsBracketedHostChar(c) : IsHostChar(c))) return bad("bad host character");
  }
  if (port.empty() || port.size() > 5) return bad("port must be 1-65535");
  int value = 0;
  for (char c : port) {
    if (c < '0' || c > '9') return bad("port must be 1-65535");
    value = value * 10 + (c - '0');
  }
  if (value < 1 || value > 65535) return bad("port must be 1-65535");
  return absl::OkStatus();
}

absl::Status ValidateNodes(std::string_view list, const std::vector<ClusterNode>& nodes,
                           int vnodes_per_weight, std::map<std::string, std::string>* ids) {
  if (nodes.empty()) return Invalid(list, "must list at least one node");
  size_t total_weight = 0;
  for (size_t i = 0; i < nodes.size(); ++i) {
    const std::string field = absl::StrCat(std::string(list), "[", i, "]");
    const ClusterNode& node = nodes[i];
    WHORL_RETURN_IF_ERROR(ValidateId(field + ".id", node.id));
    const auto [it, inserted] = ids->emplace(node.id, field);
    if (!inserted) {
      return Invalid(field + ".id",
                     absl::StrCat("duplicate id \"", node.id, "\" (also ", it->second, ")"));
    }
    WHORL_RETURN_IF_ERROR(ValidateAddress(field + ".address", node.address));
    if (node.weight < 1 || node.weight > ClusterMap::kMaxWeight) {
      return Invalid(
          field + ".weight",
          absl::StrCat("must be an integer in 1..", ClusterMap::kMaxWeight, ", got ", node.weight));
    }
    total_weight += static_cast<size_t>(node.weight);
  }
  if (total_weight * static_cast<size_t>(vnodes_per_weight) > HashRing::kMaxVnodes) {
    return Invalid(list, absl::StrCat("total weight times vnodes_per_weight exceeds ",
                                      HashRing::kMaxVnodes, " virtual nodes"));
  }
  return absl::OkStatus();
}

// Reads an integer field in [lo, hi]; floats, strings, booleans and out-of-range values fail.
absl::StatusOr<uint64_t> GetInteger(const Json& value, std::string_view field, uint64_t lo,
                                    uint64_t hi) {
  const auto bad = [&] {
    return Invalid(field, absl::StrCat("must be an integer in ", lo, "..", hi, ", got ",
                                       value.dump(-1, ' ', false, Json::error_handler_t::replace)));
  };
  // nlohmann stores non-negative integers as unsigned; negatives and floats fail here.
  if (!value.is_number_unsigned()) return bad();
  const uint64_t v = value.get<uint64_t>();
  if (v < lo || v > hi) return bad();
  return v;
}

absl::StatusOr<std::string> GetString(const Json& object, const char* key, std::string_view field) {
  const auto it = object.find(key);
  if (it == object.end()) return Invalid(field, "missing");
  if (!it->is_string()) return Invalid(field, "must be a string");
  return it->get<std::string>();
}

absl::StatusOr<std::vector<ClusterNode>> ParseNodes(const Json& root, const char* list) {
  const auto it = root.find(list);
  if (it == root.end()) return Invalid(list, "missing");
  if (!it->is_array()) return Invalid(list, "must be an array of nodes");
  std::vector<ClusterNode> nodes;
  for (size_t i = 0; i < it->size(); ++i) {
    const std::string field = absl::StrCat(std::string(list), "[", i, "]");
    const Json& entry = (*it)[i];
    if (!entry.is_object()) return Invalid(field, "must be an object");
    ClusterNode node;
    WHORL_ASSIGN_OR_RETURN(node.id, GetString(entry, "id", field + ".id"));
    WHORL_ASSIGN_OR_RETURN(node.address, GetString(entry, "address", field + ".address"));
    if (const auto w = entry.find("weight"); w != entry.end()) {
      WHORL_ASSIGN_OR_RETURN(const uint64_t weight,
                             GetInteger(*w, field + ".weight", 1, ClusterMap::kMaxWeight));
      node.weight = static_cast<int>(weight);
    }
    nodes.push_back(std::move(node));
  }
  return nodes;
}

absl::StatusOr<ClusterMap> FromJson(const Json& root) {
  if (!root.is_object()) {
    return absl::InvalidArgumentError("cluster map: the document must be a JSON object");
  }
  const auto format = root.find("format");
  if (format == root.end()) return Invalid("format", "missing");
  if (!format->is_number_unsigned() || format->get<uint64_t>() != ClusterMap::kFormat) {
    return Invalid("format",
                   absl::StrCat("unsupported format ",
                                format->dump(-1, ' ', false, Json::error_handler_t::replace),
                                " (this build reads format 1)"));
  }
  ClusterMap map;
  const auto epoch = root.find("epoch");
  if (epoch == root.end()) return Invalid("epoch", "missing");
  WHORL_ASSIGN_OR_RETURN(map.epoch,
                         GetInteger(*epoch, "epoch", 1, std::numeric_limits<uint64_t>::max()));
  if (const auto v = root.find("vnodes_per_weight"); v != root.end()) {
    WHORL_ASSIGN_OR_RETURN(const uint64_t vnodes,
                           GetInteger(*v, "vnodes_per_weight", 1, kMaxVnodesPerWeight));
    map.vnodes_per_weight = static_cast<int>(vnodes);
  } else {
    map.vnodes_per_weight = kFormat1DefaultVnodesPerWeight;
  }
  WHORL_ASSIGN_OR_RETURN(map.metadata, ParseNodes(root, "metadata"));
  WHORL_ASSIGN_OR_RETURN(map.chunkstores, ParseNodes(root, "chunkstores"));
  return map;
}

nlohmann::ordered_json NodesToJson(const std::vector<ClusterNode>& nodes) {
  nlohmann::ordered_json out = nlohmann::ordered_json::array();
  for (const ClusterNode& node : nodes) {
    out.push_back({{"id", node.id}, {"address", node.address}, {"weight", node.weight}});
  }
  return out;
}

}  // namespace

absl::Status ValidateClusterMap(const ClusterMap& map) {
  if (map.epoch == 0) return Invalid("epoch", "must be >= 1 (0 means \"no map\")");
  if (map.vnodes_per_weight < 1 || map.vnodes_per_weight > kMaxVnodesPerWeight) {
    return Invalid("vnodes_per_weight",
                   absl::StrCat("must be an integer in 1..", kMaxVnodesPerWeight, ", got ",
                                map.vnodes_per_weight));
  }
  std::map<std::string, std::string> ids;  // id -> field that first used it.
  WHORL_RETURN_IF_ERROR(ValidateNodes("metadata", map.metadata, map.vnodes_per_weight, &ids));
  return ValidateNodes("chunkstores", map.chunkstores, map.vnodes_per_weight, &ids);
}

absl::StatusOr<ClusterMap> ParseClusterMap(std::string_view json) {
  // The parser reports syntax errors by exception; none may leave this function. Type errors
  // cannot happen below (every access checks the type first), but the catch covers them too.
  try {
    const Json root = Json::parse(json.begin(), json.end());
    WHORL_ASSIGN_OR_RETURN(ClusterMap map, FromJson(root));
    WHORL_RETURN_IF_ERROR(ValidateClusterMap(map));
    return map;
  } catch (const Json::exception& e) {
    return absl::InvalidArgumentError(absl::StrCat("cluster map: malformed JSON: ", e.what()));
  }
}

std::string SerializeClusterMap(const ClusterMap& map) {
  nlohmann::ordered_json root;
  root["format"] = ClusterMap::kFormat;
  root["epoch"] = map.epoch;
  root["vnodes_per_weight"] = map.vnodes_per_weight;
  root["metadata"] = NodesToJson(map.metadata);
  root["chunkstores"] = NodesToJson(map.chunkstores);
  // `replace` instead of throwing on invalid UTF-8 (which a valid map cannot contain).
  return root.dump(2, ' ', false, nlohmann::ordered_json::error_handler_t::replace) + "\n";
}

absl::StatusOr<ClusterMap> LoadClusterMap(const std::string& path) {
  absl::StatusOr<std::string> text = ReadFile(path, ClusterMap::kMaxFileSize);
  if (!text.ok()) return Annotate(text.status(), "cluster map " + path);
  absl::StatusOr<ClusterMap> map = ParseClusterMap(*text);
  if (!map.ok()) return Annotate(map.status(), path);
  return map;
}

absl::StatusOr<HashRing> ClusterMap::MetadataRing() const {
  WHORL_RETURN_IF_ERROR(ValidateClusterMap(*this));
  std::vector<RingNode> nodes;
  for (const ClusterNode& node : metadata) nodes.push_back({node.id, node.weight});
  return HashRing::Build(std::move(nodes), vnodes_per_weight);
}

absl::StatusOr<HashRing> ClusterMap::ChunkStoreRing() const {
  WHORL_RETURN_IF_ERROR(ValidateClusterMap(*this));
  std::vector<RingNode> nodes;
  for (const ClusterNode& node : chunkstores) nodes.push_back({node.id, node.weight});
  return HashRing::Build(std::move(nodes), vnodes_per_weight);
}

const ClusterNode* ClusterMap::FindNode(std::string_view id) const {
  for (const std::vector<ClusterNode>* list : {&metadata, &chunkstores}) {
    for (const ClusterNode& node : *list) {
      if (node.id == id) return &node;
    }
  }
  return nullptr;
}

}  // namespace whorl
