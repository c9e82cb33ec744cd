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

# localvol_add_grpc_proto(TARGET PROTO)
# A static library of the protobuf and gRPC C++ code generated from PROTO (a
# path below the source tree) with Debian's protoc and grpc_cpp_plugin, into
# the build tree; its headers are included as "<dir>/<name>.grpc.pb.h", the
# proto's path relative to the source tree.
function(localvol_add_grpc_proto target proto)
  file(RELATIVE_PATH rel ${PROJECT_SOURCE_DIR} ${proto})
  string(REGEX REPLACE "\\.proto$" "" stem ${rel})
  set(out ${CMAKE_CURRENT_BINARY_DIR}/gen)
  set(srcs ${out}/${stem}.pb.cc ${out}/${stem}.grpc.pb.cc)
  set(hdrs ${out}/${stem}.pb.h ${out}/${stem}.grpc.pb.h)
  add_custom_command(
    OUTPUT ${srcs} ${hdrs}
    COMMAND ${CMAKE_COMMAND} -E make_directory ${out}
    COMMAND ${PROTOC_EXECUTABLE}
            --proto_path=${PROJECT_SOURCE_DIR}
            --cpp_out=${out}
            --grpc_out=${out}
            --plugin=protoc-gen-grpc=${GRPC_CPP_PLUGIN}
            ${proto}
    DEPENDS ${proto}
    COMMENT "protoc: ${rel}"
    VERBATIM)
  add_library(${target} STATIC ${srcs})
  target_include_directories(${target} PUBLIC ${out})
  target_link_libraries(${target} PUBLIC PkgConfig::GRPCPP PkgConfig::PROTOBUF)
  # Generated code is not ours to warn about.
  target_compile_options(${target} PRIVATE -w)
endfunction()
