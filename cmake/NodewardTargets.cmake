# Helpers every directory uses to declare its targets the same way.

# True when this flavour builds binaries, integration tests and benchmarks.
if(NODEWARD_SANITIZE)
  set(NODEWARD_FULL_BUILD OFF)
else()
  set(NODEWARD_FULL_BUILD ON)
endif()

# nodeward_binary(NAME SOURCES ... LIBS ...): a shipped executable (full build only).
function(nodeward_binary name)
  cmake_parse_arguments(ARG "" "" "SOURCES;LIBS" ${ARGN})
  add_executable(${name} ${ARG_SOURCES})
  target_link_libraries(${name} PRIVATE ${ARG_LIBS})
  set_target_properties(${name} PROPERTIES RUNTIME_OUTPUT_DIRECTORY "${PROJECT_BINARY_DIR}/bin")
  install(TARGETS ${name} RUNTIME DESTINATION bin)
  set_property(GLOBAL APPEND PROPERTY NODEWARD_EXECUTABLES ${name})
endfunction()

# nodeward_unit_test(NAME SOURCES ... LIBS ...): a GoogleTest binary registered with ctest
# under the label "unit". Built in both flavours, so it also runs under ASan+UBSan.
function(nodeward_unit_test name)
  cmake_parse_arguments(ARG "" "" "SOURCES;LIBS" ${ARGN})
  add_executable(${name} ${ARG_SOURCES})
  target_link_libraries(${name} PRIVATE ${ARG_LIBS} GTest::gtest GTest::gmock GTest::gtest_main)
  add_test(NAME ${name} COMMAND ${name} --gtest_brief=1)
  set_tests_properties(${name} PROPERTIES LABELS unit TIMEOUT 300)
  set_property(GLOBAL APPEND PROPERTY NODEWARD_EXECUTABLES ${name})
endfunction()

# nodeward_fuzz_target(NAME SOURCES ... LIBS ... [RUNS N]): a libFuzzer target, only in the
# sanitize (clang) flavour; ctest runs it for a bounded number of iterations from its seeds
# in fuzz/corpus/NAME next to the sources, when that folder exists.
function(nodeward_fuzz_target name)
  cmake_parse_arguments(ARG "" "RUNS" "SOURCES;LIBS" ${ARGN})
  if(NOT NODEWARD_SANITIZE)
    return()
  endif()
  if(NOT ARG_RUNS)
    set(ARG_RUNS 20000)
  endif()
  add_executable(${name} ${ARG_SOURCES})
  target_compile_options(${name} PRIVATE -fsanitize=fuzzer)
  target_link_options(${name} PRIVATE -fsanitize=fuzzer)
  target_link_libraries(${name} PRIVATE ${ARG_LIBS})
  set(corpus "${CMAKE_CURRENT_SOURCE_DIR}/fuzz/corpus/${name}")
  set(work "${CMAKE_CURRENT_BINARY_DIR}/${name}.corpus")
  set(seeds "")
  if(EXISTS "${corpus}")
    set(seeds "${corpus}")
  endif()
  add_test(NAME ${name}
           COMMAND sh -c "mkdir -p '${work}' && exec \"$0\" -runs=${ARG_RUNS} -max_total_time=120 -print_final_stats=0 '${work}' ${seeds}"
                   $<TARGET_FILE:${name}>)
  set_tests_properties(${name} PROPERTIES LABELS fuzz TIMEOUT 300)
endfunction()

# nodeward_proto_library(NAME PROTOS ... [GRPC] [DEPS ...]): C++ (and gRPC) code generated from
# .proto files under PROTO_ROOT (default: this directory), as a static library.
function(nodeward_proto_library name)
  cmake_parse_arguments(ARG "GRPC" "PROTO_ROOT" "PROTOS;DEPS" ${ARGN})
  if(NOT ARG_PROTO_ROOT)
    set(ARG_PROTO_ROOT "${CMAKE_CURRENT_SOURCE_DIR}")
  endif()
  set(out "${CMAKE_CURRENT_BINARY_DIR}/gen")
  file(MAKE_DIRECTORY "${out}")
  set(srcs "")
  foreach(proto IN LISTS ARG_PROTOS)
    get_filename_component(abs "${proto}" ABSOLUTE)
    file(RELATIVE_PATH rel "${ARG_PROTO_ROOT}" "${abs}")
    string(REGEX REPLACE "\\.proto$" "" base "${rel}")
    set(gen "${out}/${base}.pb.cc" "${out}/${base}.pb.h")
    set(cmd ${PROTOC_EXECUTABLE} -I "${ARG_PROTO_ROOT}" --cpp_out "${out}")
    if(ARG_GRPC)
      list(APPEND gen "${out}/${base}.grpc.pb.cc" "${out}/${base}.grpc.pb.h")
      list(APPEND cmd --grpc_out "${out}" --plugin=protoc-gen-grpc=${GRPC_CPP_PLUGIN})
    endif()
    add_custom_command(OUTPUT ${gen} COMMAND ${cmd} "${abs}" DEPENDS "${abs}"
                       COMMENT "protoc ${rel}" VERBATIM)
    list(APPEND srcs ${gen})
  endforeach()
  add_library(${name} STATIC ${srcs})
  target_include_directories(${name} PUBLIC "${out}")
  target_link_libraries(${name} PUBLIC protobuf::libprotobuf ${ARG_DEPS})
  if(ARG_GRPC)
    target_link_libraries(${name} PUBLIC gRPC::grpc++)
  endif()
  target_compile_options(${name} PRIVATE -w)
endfunction()
