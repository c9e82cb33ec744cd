# localvol_add_test(NAME SOURCES... [LIBS ...] [LABELS ...])
# The one way a GoogleTest binary is registered with ctest. Every test case
# becomes its own ctest entry so `ctest -j` runs them in parallel.
include(GoogleTest)
function(localvol_add_test name)
  cmake_parse_arguments(ARG "" "TIMEOUT" "SOURCES;LIBS;LABELS" ${ARGN})
  add_executable(${name} ${ARG_SOURCES})
  target_link_libraries(${name} PRIVATE ${ARG_LIBS} GTest::gtest GTest::gtest_main)
  if(NOT ARG_TIMEOUT)
    set(ARG_TIMEOUT 300)
  endif()
  # NO_PRETTY_VALUES: test names come from the parameter name generators
  # (".../Raw"), not from each parameter value printed into the ctest name.
  gtest_discover_tests(${name} NO_PRETTY_VALUES
    DISCOVERY_TIMEOUT 60
    PROPERTIES TIMEOUT ${ARG_TIMEOUT} LABELS "${ARG_LABELS}")
endfunction()
