# whorl_cc_library(NAME SRCS ... DEPS ...): a project library compiled with our warnings.
# whorl_cc_test(NAME SRCS ... DEPS ... [LABELS ...]): a GoogleTest binary registered with ctest.
set(WHORL_WARNINGS -Wall -Wextra -Werror -Werror=unused-result)

function(whorl_cc_library name)
  cmake_parse_arguments(A "" "" "SRCS;DEPS" ${ARGN})
  add_library(${name} STATIC ${A_SRCS})
  target_compile_options(${name} PRIVATE ${WHORL_WARNINGS})
  target_include_directories(${name} PUBLIC ${PROJECT_SOURCE_DIR})
  target_link_libraries(${name} PUBLIC ${A_DEPS})
endfunction()

function(whorl_cc_test name)
  cmake_parse_arguments(A "" "" "SRCS;DEPS;LABELS" ${ARGN})
  add_executable(${name} ${A_SRCS})
  target_compile_options(${name} PRIVATE ${WHORL_WARNINGS})
  target_link_libraries(${name} PRIVATE ${A_DEPS} GTest::gtest GTest::gtest_main)
  add_test(NAME ${name} COMMAND ${name})
  if(NOT A_LABELS)
    set(A_LABELS unit)
  endif()
  set_tests_properties(${name} PROPERTIES LABELS "${A_LABELS}" TIMEOUT 300)
endfunction()

# WHORL_FUZZ: libFuzzer build (clang only: CC=clang-14 CXX=clang++-14). Every project target
# gets coverage instrumentation plus ASan+UBSan; the targets in tests/fuzz link libFuzzer's
# main. Debian's gRPC/protobuf/RocksDB stay uninstrumented. Build only `whorl_fuzz`.
option(WHORL_FUZZ "Build the libFuzzer targets in tests/fuzz (clang)" OFF)
if(WHORL_FUZZ)
  if(NOT CMAKE_CXX_COMPILER_ID MATCHES "Clang")
    message(FATAL_ERROR "WHORL_FUZZ needs clang: configure with CC=clang-14 CXX=clang++-14")
  endif()
  add_compile_options(-fsanitize=fuzzer-no-link,address,undefined -fno-omit-frame-pointer
                      -fno-sanitize-recover=undefined)
  add_link_options(-fsanitize=address,undefined)
endif()

# WHORL_TSAN: ThreadSanitizer build of the concurrent parts (tests/run.sh stage "tsan").
# Debian's abseil is not instrumented, so absl::Mutex is invisible to TSan: the test binaries
# link tests/tsan/absl_mutex_tsan.cc, which tells TSan about every lock and unlock.
option(WHORL_TSAN "Build with ThreadSanitizer" OFF)
if(WHORL_TSAN)
  add_compile_options(-fsanitize=thread -fno-omit-frame-pointer)
  add_link_options(-fsanitize=thread)
  add_library(whorl_tsan_absl OBJECT ${PROJECT_SOURCE_DIR}/tests/tsan/absl_mutex_tsan.cc)
  target_compile_options(whorl_tsan_absl PRIVATE ${WHORL_WARNINGS})
endif()

# Links the absl::Mutex annotations into every executable under `dir` (call once, at the end of
# the top-level CMakeLists.txt, when WHORL_TSAN is on).
function(whorl_tsan_link_executables dir)
  get_property(targets DIRECTORY ${dir} PROPERTY BUILDSYSTEM_TARGETS)
  foreach(t ${targets})
    get_target_property(type ${t} TYPE)
    if(type STREQUAL "EXECUTABLE")
      target_link_libraries(${t} PRIVATE whorl_tsan_absl ${CMAKE_DL_LIBS})
    endif()
  endforeach()
  get_property(subdirs DIRECTORY ${dir} PROPERTY SUBDIRECTORIES)
  foreach(d ${subdirs})
    whorl_tsan_link_executables(${d})
  endforeach()
endfunction()
