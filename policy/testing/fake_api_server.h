// A fake Kubernetes API server for tests: a thread in the test process speaking HTTPS on
// 127.0.0.1 with the real list/watch wire format (JSON lists, chunked watch streams of
// {"type":...,"object":...} lines, bookmarks, 410 errors), bearer-token authentication, and
// handlers for requests that are not lists or watches (for example TokenReview creation).
#pragma once

#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "crypto/tls.h"

namespace nodeward::policy::testing {

class FakeApiServer {
 public:
  struct Request {
    std::string method;  // "GET", "POST", ...
    std::string target;  // path and query
    std::string path;    // without the query
    std::string authorization;
    std::string body;
  };
  struct Response {
    int status = 200;
    std::string body;
  };
  using Handler = std::function<Response(const Request&)>;

  // Serves with `context`; requests must carry "Authorization: Bearer <token>".
  FakeApiServer(std::shared_ptr<const crypto::TlsContext> context, std::string token);
  ~FakeApiServer();
  FakeApiServer(const FakeApiServer&) = delete;
  FakeApiServer& operator=(const FakeApiServer&) = delete;

  uint16_t port() const { return port_; }

  // The list at `path` (items are JSON objects) and the resourceVersion it is at.
  void SetList(const std::string& path, const std::string& resource_version,
               std::vector<std::string> items);
  void RemoveList(const std::string& path);
  // Sends {"type":type,"object":object} to the watches open on `path` and to later ones.
  void PushEvent(const std::string& path, const std::string& type, const std::string& object);
  // Ends the watches open on `path` normally (as the server's timeout does).
  void EndWatches(const std::string& path);
  // Cuts the watches open on `path` mid-stream, without the terminating chunk.
  void DropWatches(const std::string& path);
  // Answers `method` requests to `path` (without query) with `handler` instead of a list;
  // the bearer token is then the handler's to check.
  void SetHandler(const std::string& method, const std::string& path, Handler handler);

  // Count of requests whose target starts with `prefix`.
  int Count(const std::string& prefix);
  std::vector<std::string> Requests();

 private:
  class Connection;

  void Accept();
  void Serve(Connection& connection);

  const std::shared_ptr<const crypto::TlsContext> context_;
  const std::string token_;
  int listen_fd_ = -1;
  uint16_t port_ = 0;
  std::thread acceptor_;
  absl::Mutex mutex_;
  bool stopping_ ABSL_GUARDED_BY(mutex_) = false;
  std::vector<std::thread> handlers_ ABSL_GUARDED_BY(mutex_);
  std::map<std::string, std::pair<std::string, std::vector<std::string>>> lists_
      ABSL_GUARDED_BY(mutex_);
  std::map<std::string, std::deque<std::string>> events_ ABSL_GUARDED_BY(mutex_);
  std::map<std::string, int> watch_epoch_ ABSL_GUARDED_BY(mutex_);
  std::map<std::string, int> drop_epoch_ ABSL_GUARDED_BY(mutex_);
  std::map<std::pair<std::string, std::string>, Handler> request_handlers_ ABSL_GUARDED_BY(mutex_);
  std::vector<std::string> requests_ ABSL_GUARDED_BY(mutex_);
};

}  // namespace nodeward::policy::testing
