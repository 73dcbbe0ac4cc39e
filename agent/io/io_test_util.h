// Helpers for loop tests: blocking peers that run in their own threads on loopback.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "agent/io/event_loop.h"

namespace nodeward::io::testing {

// Creates a loop or explains why io_uring is unusable here (tests skip on that).
absl::StatusOr<std::unique_ptr<EventLoop>> NewLoop(
    const EventLoop::Options& options = EventLoop::Options{});

#define NODEWARD_LOOP_OR_SKIP(var, ...)                                              \
  auto var##_or = ::nodeward::io::testing::NewLoop(__VA_ARGS__);                     \
  if (!var##_or.ok()) GTEST_SKIP() << "io_uring unavailable: " << var##_or.status(); \
  std::unique_ptr<::nodeward::io::EventLoop> var = std::move(*var##_or)

std::vector<std::uint8_t> RandomBytes(std::size_t size, std::uint32_t seed);

// RAII socket descriptor.
class Fd {
 public:
  Fd() = default;
  explicit Fd(int fd) : fd_(fd) {}
  Fd(Fd&& other) noexcept : fd_(other.release()) {}
  Fd& operator=(Fd&& other) noexcept;
  ~Fd();
  int get() const { return fd_; }
  int release() {
    int fd = fd_;
    fd_ = -1;
    return fd;
  }

 private:
  int fd_ = -1;
};

// Blocking sockets with timeouts, so a broken test fails instead of hanging.
absl::StatusOr<Fd> ListenLoopback(int backlog = 16);
std::uint16_t PortOf(int fd);
absl::StatusOr<Fd> ConnectLoopback(std::uint16_t port);
absl::StatusOr<Fd> AcceptOne(int listen_fd);
absl::Status WriteAll(int fd, const std::vector<std::uint8_t>& data, std::size_t chunk = 65536);
// Reads until EOF. `pause_every`/`pause` slow the reader down for backpressure tests.
absl::StatusOr<std::vector<std::uint8_t>> ReadToEof(int fd, std::size_t pause_every = 0,
                                                    absl::Duration pause = absl::ZeroDuration());
void ShutdownWrite(int fd);

}  // namespace nodeward::io::testing
