// Status propagation macros. Our abseil (20220623) has no RETURN_IF_ERROR/ASSIGN_OR_RETURN.
//
//   WHORL_RETURN_IF_ERROR(file.Sync());
//   WHORL_ASSIGN_OR_RETURN(Tree tree, repo.LoadTree(fp));
#ifndef WHORL_COMMON_STATUS_MACROS_H_
#define WHORL_COMMON_STATUS_MACROS_H_

#include "absl/status/status.h"
#include "absl/status/statusor.h"

#define WHORL_RETURN_IF_ERROR(expr)                  \
  do {                                               \
    ::absl::Status whorl_status_ = (expr);           \
    if (!whorl_status_.ok()) return whorl_status_;   \
  } while (0)

#define WHORL_STATUS_CONCAT_INNER_(a, b) a##b
#define WHORL_STATUS_CONCAT_(a, b) WHORL_STATUS_CONCAT_INNER_(a, b)

#define WHORL_ASSIGN_OR_RETURN(lhs, expr) \
  WHORL_ASSIGN_OR_RETURN_IMPL_(WHORL_STATUS_CONCAT_(whorl_statusor_, __LINE__), lhs, expr)

#define WHORL_ASSIGN_OR_RETURN_IMPL_(statusor, lhs, expr) \
  auto statusor = (expr);                                 \
  if (!statusor.ok()) return std::move(statusor).status(); \
  lhs = std::move(statusor).value()

namespace whorl {

// Returns `status` with `context: ` put before its message (same code); OK stays OK.
inline absl::Status Annotate(const absl::Status& status, std::string_view context) {
  if (status.ok()) return status;
  return absl::Status(status.code(),
                      std::string(context) + ": " + std::string(status.message()));
}

}  // namespace whorl

#endif  // WHORL_COMMON_STATUS_MACROS_H_
