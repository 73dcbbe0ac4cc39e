// A fake Kubernetes API server for tests: a thread in the test process (or the
// nodeward-fake-apiserver binary) speaking HTTPS with the real list/watch wire format (JSON
// lists, chunked watch streams of {"type":...,"object":...} lines, bookmarks, 410 errors),
// bearer-token authentication, and handlers for requests that are not lists or watches (for
// example TokenReview creation). Two ways to serve a resource:
//  - scripted (SetList, PushEvent): the test says what each list and watch answers, byte for
//    byte, to provoke one client behaviour;
//  - stored (ServeResource): objects created, replaced and deleted (from C++ or with POST, PUT
//    and DELETE) in an ObjectStore with the API's semantics: resourceVersions, watches that
//    resume or get 410 Gone after Compact(), periodic bookmarks, field selectors. POST
//    /fake/compact and POST /fake/drop-watches do the same from outside.
#pragma once

#include <atomic>
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
#include "absl/time/time.h"
#include "crypto/tls.h"
#include "policy/testing/object_store.h"

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

  struct Options {
    std::string address = "127.0.0.1";  // IPv4
    uint16_t port = 0;                  // 0: any free port
    // How often a stored resource's watches that asked for bookmarks get one.
    absl::Duration bookmark_interval = absl::Seconds(1);
  };

  // Serves with `context`; requests must carry "Authorization: Bearer <token>".
  FakeApiServer(std::shared_ptr<const crypto::TlsContext> context, std::string token);
  FakeApiServer(std::shared_ptr<const crypto::TlsContext> context, std::string token,
                Options options);
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

  // Serves `collection` ("/api/v1/pods", "/apis/apps/v1/daemonsets") from the object store.
  void ServeResource(const std::string& collection, const std::string& kind, bool namespaced);
  // Writes to stored resources, as POST (to a collection path, e.g.
  // "/api/v1/namespaces/shop/pods"), PUT and DELETE (to an object's path) do; the HTTP status.
  int CreateObject(const std::string& path, const std::string& json);
  int ReplaceObject(const std::string& path, const std::string& json);
  int DeleteObject(const std::string& path);
  // Watches resuming from any resourceVersion up to now get 410 Gone.
  void Compact();
  // Cuts every open watch of a stored resource mid-stream.
  void DropStoredWatches();
  int64_t ResourceVersion();

  // Count of requests whose target starts with `prefix`.
  int Count(const std::string& prefix);
  std::vector<std::string> Requests();

 private:
  class Connection;

  void Accept();
  void Serve(Connection& connection);
  // A request to a stored resource.
  void ServeStored(Connection& connection, const std::string& method, const std::string& target,
                   const ResourcePath& path, const std::string& body);
  ObjectStore::Reply Write(const std::string& method, const std::string& path,
                           const std::string& body);

  const std::shared_ptr<const crypto::TlsContext> context_;
  const std::string token_;
  const Options options_;
  int listen_fd_ = -1;
  uint16_t port_ = 0;
  std::thread acceptor_;
  absl::Mutex mutex_;
  bool stopping_ ABSL_GUARDED_BY(mutex_) = false;
  struct ConnectionThread {
    std::thread thread;
    std::shared_ptr<std::atomic<bool>> done;
  };
  std::vector<ConnectionThread> handlers_ ABSL_GUARDED_BY(mutex_);
  std::map<std::string, std::pair<std::string, std::vector<std::string>>> lists_
      ABSL_GUARDED_BY(mutex_);
  std::map<std::string, std::deque<std::string>> events_ ABSL_GUARDED_BY(mutex_);
  std::map<std::string, int> watch_epoch_ ABSL_GUARDED_BY(mutex_);
  std::map<std::string, int> drop_epoch_ ABSL_GUARDED_BY(mutex_);
  std::map<std::pair<std::string, std::string>, Handler> request_handlers_ ABSL_GUARDED_BY(mutex_);
  std::vector<std::string> requests_ ABSL_GUARDED_BY(mutex_);
  ObjectStore store_ ABSL_GUARDED_BY(mutex_);
  int stored_drop_epoch_ ABSL_GUARDED_BY(mutex_) = 0;
};

}  // namespace nodeward::policy::testing
