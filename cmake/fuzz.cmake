# fuzz.cmake: libFuzzer targets for the parsers that read untrusted bytes, bounded fuzz runs
# as tests (each target from its checked-in corpus), and cppcheck + clang-tidy as tests.
set(OFS_FUZZ_SECONDS 4 CACHE STRING "seconds each fuzz target runs in the test suite")
set(OFS_FUZZ_TARGETS parse config utf7 names)
foreach(t ${OFS_FUZZ_TARGETS})
  add_executable(fuzz_${t} ${CMAKE_SOURCE_DIR}/tests/fuzz/fuzz_${t}.c)
  target_link_libraries(fuzz_${t} PRIVATE ofsync_core)
  target_link_options(fuzz_${t} PRIVATE -fsanitize=fuzzer)
  add_test(NAME fuzz.${t}
           COMMAND bash ${CMAKE_SOURCE_DIR}/tests/fuzz/run.sh $<TARGET_FILE:fuzz_${t}>
                   ${CMAKE_SOURCE_DIR}/tests/fuzz/corpus/${t} -max_total_time=${OFS_FUZZ_SECONDS})
  set_tests_properties(fuzz.${t} PROPERTIES TIMEOUT 120)
endforeach()
# `make fuzz`: every target for FUZZ_SECONDS (default 10 min), new inputs kept in build/.
add_custom_target(fuzz-long
  COMMAND ${CMAKE_COMMAND} -E env FUZZ_KEEP=${CMAKE_BINARY_DIR}/fuzz-corpus
          bash ${CMAKE_SOURCE_DIR}/tests/fuzz/long.sh ${CMAKE_BINARY_DIR} ${CMAKE_SOURCE_DIR}
  DEPENDS fuzz_parse fuzz_config fuzz_utf7 fuzz_names USES_TERMINAL)

find_program(CPPCHECK cppcheck)
if(CPPCHECK)
  add_test(NAME static.cppcheck
           COMMAND bash ${CMAKE_SOURCE_DIR}/scripts/static-check.sh cppcheck ${CMAKE_BINARY_DIR})
  set_tests_properties(static.cppcheck PROPERTIES TIMEOUT 600)
endif()
find_program(CLANG_TIDY NAMES clang-tidy clang-tidy-14)
if(CLANG_TIDY)
  add_test(NAME static.clang-tidy
           COMMAND bash ${CMAKE_SOURCE_DIR}/scripts/static-check.sh clang-tidy ${CMAKE_BINARY_DIR})
  set_tests_properties(static.clang-tidy PROPERTIES TIMEOUT 600)
endif()
find_program(CLANG_FORMAT clang-format)
if(CLANG_FORMAT)
  add_test(NAME static.clang-format
           COMMAND bash ${CMAKE_SOURCE_DIR}/scripts/static-check.sh clang-format ${CMAKE_BINARY_DIR})
endif()
