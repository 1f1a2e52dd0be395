// Helpers shared by the agent's tests.
#ifndef WHORL_AGENT_TEST_UTIL_H_
#define WHORL_AGENT_TEST_UTIL_H_

#include <stdlib.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>

namespace whorl::agent::testing {

// The whole file (empty if it cannot be read).
inline std::string ReadAll(const std::filesystem::path& p) {
  std::ifstream in(p, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

// A fresh directory /tmp/PREFIX-XXXXXX; the caller removes it.
inline std::filesystem::path MakeTempDir(const std::string& prefix) {
  std::string tmpl = "/tmp/" + prefix + "-XXXXXX";
  if (::mkdtemp(tmpl.data()) == nullptr) std::abort();  // tests cannot run without it
  return tmpl;
}

}  // namespace whorl::agent::testing

#endif  // WHORL_AGENT_TEST_UTIL_H_
