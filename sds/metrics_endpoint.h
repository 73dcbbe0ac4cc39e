// nodeward-sds's Prometheus endpoint: GET /metrics on a TCP address (loopback by default in
// deployments), answered from one thread of its own, one request per connection, so a slow
// scraper never touches the SDS streams.
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <thread>

#include "absl/status/statusor.h"

namespace nodeward::sds {

class MetricsEndpoint {
 public:
  using Render = std::function<std::string()>;
  // `address` is "host:port" with an IPv4 host; port 0 picks one (see port()).
  static absl::StatusOr<std::unique_ptr<MetricsEndpoint>> Start(const std::string& address,
                                                                Render render);
  ~MetricsEndpoint();
  MetricsEndpoint(const MetricsEndpoint&) = delete;
  MetricsEndpoint& operator=(const MetricsEndpoint&) = delete;
  int port() const { return port_; }

 private:
  MetricsEndpoint(int listen_fd, int wake_fd, int port, Render render);
  void Serve();
  void Answer(int fd) const;

  const int listen_fd_;
  const int wake_fd_;
  const int port_;
  const Render render_;
  std::thread thread_;
};

}  // namespace nodeward::sds
