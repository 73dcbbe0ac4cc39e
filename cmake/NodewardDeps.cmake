# Every third-party dependency, found once. See the README's dependency table for why each
# one is here.
find_package(PkgConfig REQUIRED)
find_package(Threads REQUIRED)
find_package(absl CONFIG REQUIRED)
find_package(Protobuf REQUIRED)
find_package(gRPC CONFIG REQUIRED)
find_package(GTest CONFIG REQUIRED)
find_package(yaml-cpp CONFIG REQUIRED)
pkg_check_modules(LIBURING REQUIRED IMPORTED_TARGET liburing)
pkg_check_modules(LIBBPF REQUIRED IMPORTED_TARGET libbpf)
pkg_check_modules(NGHTTP2 REQUIRED IMPORTED_TARGET libnghttp2)
if(NOT NODEWARD_SANITIZE)
  find_package(benchmark CONFIG REQUIRED)
endif()

find_program(PROTOC_EXECUTABLE protoc REQUIRED)
find_program(GRPC_CPP_PLUGIN grpc_cpp_plugin REQUIRED)

# BoringSSL: static, hidden visibility. Only crypto/ links it, and crypto/ folds it into one
# relocatable object whose BoringSSL symbols are made local (see crypto/CMakeLists.txt).
set(BORINGSSL_INCLUDE_DIR "${NODEWARD_BORINGSSL_DIR}/include")
set(BORINGSSL_SSL_LIBRARY "${NODEWARD_BORINGSSL_DIR}/lib/libssl.a")
set(BORINGSSL_CRYPTO_LIBRARY "${NODEWARD_BORINGSSL_DIR}/lib/libcrypto.a")
foreach(f IN ITEMS "${BORINGSSL_INCLUDE_DIR}/openssl/ssl.h" "${BORINGSSL_SSL_LIBRARY}"
                   "${BORINGSSL_CRYPTO_LIBRARY}")
  if(NOT EXISTS "${f}")
    message(FATAL_ERROR "BoringSSL not found at ${NODEWARD_BORINGSSL_DIR} (missing ${f}); "
                        "run tools/build-boringssl.sh or make")
  endif()
endforeach()
