#include "policy/testing/fake_api_server.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <optional>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"

namespace nodeward::policy::testing {

// One accepted connection, TLS on a blocking socket.
class FakeApiServer::Connection {
 public:
  Connection(int fd, std::unique_ptr<crypto::TlsEngine> engine)
      : fd_(fd), engine_(std::move(engine)) {}
  ~Connection() { close(fd_); }

  // Reads until a full request head arrived (handshaking on the way); what came after the
  // head stays buffered for ReadBody.
  bool ReadHead(std::string* head) {
    while (buffered_.find("\r\n\r\n") == std::string::npos) {
      if (!Pump()) return false;
      Drain();
    }
    const std::size_t end = buffered_.find("\r\n\r\n");
    *head = buffered_.substr(0, end);
    buffered_.erase(0, end + 4);
    return true;
  }

  bool ReadBody(std::size_t length, std::string* body) {
    while (buffered_.size() < length) {
      if (!Pump()) return false;
      Drain();
    }
    *body = buffered_.substr(0, length);
    buffered_.erase(0, length);
    return true;
  }

  bool Send(absl::string_view data) {
    while (!data.empty()) {
      absl::StatusOr<size_t> n = engine_->WritePlaintext(
          absl::MakeConstSpan(reinterpret_cast<const uint8_t*>(data.data()), data.size()));
      if (!n.ok() || *n == 0) return false;
      data.remove_prefix(*n);
      if (!Flush()) return false;
    }
    return true;
  }

  void Close() {
    engine_->Shutdown();
    Flush();
    shutdown(fd_, SHUT_RDWR);
  }

 private:
  void Drain() {
    uint8_t buffer[4096];
    while (true) {
      absl::StatusOr<size_t> n = engine_->ReadPlaintext(absl::MakeSpan(buffer));
      if (!n.ok() || *n == 0) break;
      buffered_.append(reinterpret_cast<char*>(buffer), *n);
    }
  }
  bool Flush() {
    uint8_t buffer[16384];
    while (engine_->PendingWire() > 0) {
      size_t n = engine_->ReadWire(absl::MakeSpan(buffer));
      for (size_t sent = 0; sent < n;) {
        ssize_t w = send(fd_, buffer + sent, n - sent, MSG_NOSIGNAL);
        if (w <= 0) return false;
        sent += static_cast<size_t>(w);
      }
    }
    return true;
  }
  // Moves one batch of bytes from the socket into the engine and answers it.
  bool Pump() {
    if (!engine_->Advance().ok() || !Flush()) return false;
    pollfd p = {fd_, POLLIN, 0};
    if (poll(&p, 1, 5000) <= 0) return false;
    uint8_t buffer[16384];
    ssize_t n = recv(fd_, buffer, sizeof(buffer), 0);
    if (n <= 0) return false;
    absl::Span<const uint8_t> data(buffer, static_cast<size_t>(n));
    while (!data.empty()) {
      size_t used = engine_->FeedWire(data);
      data.remove_prefix(used);
      if (!engine_->Advance().ok()) return false;
      if (used == 0 && !data.empty()) return false;
    }
    return Flush();
  }

  int fd_;
  std::unique_ptr<crypto::TlsEngine> engine_;
  std::string buffered_;
};

FakeApiServer::FakeApiServer(std::shared_ptr<const crypto::TlsContext> context, std::string token)
    : FakeApiServer(std::move(context), std::move(token), Options()) {}

FakeApiServer::FakeApiServer(std::shared_ptr<const crypto::TlsContext> context, std::string token,
                             Options options)
    : context_(std::move(context)), token_(std::move(token)), options_(std::move(options)) {
  listen_fd_ = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in address = {};
  address.sin_family = AF_INET;
  address.sin_port = htons(options_.port);
  if (inet_pton(AF_INET, options_.address.c_str(), &address.sin_addr) != 1) {
    address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  }
  int one = 1;
  setsockopt(listen_fd_, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
  if (bind(listen_fd_, reinterpret_cast<sockaddr*>(&address), sizeof(address)) == 0 &&
      listen(listen_fd_, 64) == 0) {
    socklen_t length = sizeof(address);
    getsockname(listen_fd_, reinterpret_cast<sockaddr*>(&address), &length);
    port_ = ntohs(address.sin_port);
  }
  acceptor_ = std::thread([this] { Accept(); });
}

FakeApiServer::~FakeApiServer() {
  {
    absl::MutexLock lock(&mutex_);
    stopping_ = true;
  }
  acceptor_.join();
  for (ConnectionThread& handler : handlers_) handler.thread.join();
  close(listen_fd_);
}

void FakeApiServer::SetList(const std::string& path, const std::string& resource_version,
                            std::vector<std::string> items) {
  absl::MutexLock lock(&mutex_);
  lists_[path] = {resource_version, std::move(items)};
}

void FakeApiServer::RemoveList(const std::string& path) {
  absl::MutexLock lock(&mutex_);
  lists_.erase(path);
}

void FakeApiServer::PushEvent(const std::string& path, const std::string& type,
                              const std::string& object) {
  absl::MutexLock lock(&mutex_);
  events_[path].push_back(absl::StrCat(R"({"type":")", type, R"(","object":)", object, "}\n"));
}

void FakeApiServer::EndWatches(const std::string& path) {
  absl::MutexLock lock(&mutex_);
  ++watch_epoch_[path];
}

void FakeApiServer::DropWatches(const std::string& path) {
  absl::MutexLock lock(&mutex_);
  ++drop_epoch_[path];
}

void FakeApiServer::SetHandler(const std::string& method, const std::string& path,
                               Handler handler) {
  absl::MutexLock lock(&mutex_);
  request_handlers_[{method, path}] = std::move(handler);
}

int FakeApiServer::Count(const std::string& prefix) {
  absl::MutexLock lock(&mutex_);
  int count = 0;
  for (const std::string& target : requests_) count += absl::StartsWith(target, prefix);
  return count;
}

std::vector<std::string> FakeApiServer::Requests() {
  absl::MutexLock lock(&mutex_);
  return requests_;
}

void FakeApiServer::Accept() {
  while (true) {
    {
      absl::MutexLock lock(&mutex_);
      if (stopping_) return;
    }
    pollfd p = {listen_fd_, POLLIN, 0};
    if (poll(&p, 1, 50) <= 0) continue;
    int fd = accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC);
    if (fd < 0) continue;
    auto connection = std::make_shared<Connection>(fd, crypto::TlsEngine::Server(context_));
    auto done = std::make_shared<std::atomic<bool>>(false);
    absl::MutexLock lock(&mutex_);
    // A long-running server reaps the threads of finished connections as it goes.
    std::erase_if(handlers_, [](ConnectionThread& handler) {
      if (!handler.done->load()) return false;
      handler.thread.join();
      return true;
    });
    handlers_.push_back({std::thread([this, connection, done] {
                           Serve(*connection);
                           done->store(true);
                         }),
                         done});
  }
}

void FakeApiServer::Serve(Connection& connection) {
  auto respond = [&connection](int status, const std::string& body) {
    connection.Send(absl::StrCat("HTTP/1.1 ", status,
                                 " X\r\nContent-Type: application/json\r\n"
                                 "Content-Length: ",
                                 body.size(), "\r\n\r\n", body));
    connection.Close();
  };
  std::string head;
  if (!connection.ReadHead(&head)) return;
  std::vector<std::string> lines = absl::StrSplit(head, "\r\n");
  std::vector<std::string> request_line = absl::StrSplit(lines[0], ' ');
  if (request_line.size() != 3) return respond(400, "{}");
  Request request;
  request.method = request_line[0];
  request.target = request_line[1];
  request.path = request.target.substr(0, request.target.find('?'));
  std::size_t content_length = 0;
  for (std::size_t i = 1; i < lines.size(); ++i) {
    const std::size_t colon = lines[i].find(':');
    if (colon == std::string::npos) continue;
    const std::string name = absl::AsciiStrToLower(lines[i].substr(0, colon));
    const std::string value(absl::StripAsciiWhitespace(lines[i].substr(colon + 1)));
    if (name == "authorization") request.authorization = value;
    if (name == "content-length" && !absl::SimpleAtoi(value, &content_length)) {
      return respond(400, "{}");
    }
  }
  if (content_length > 0 && !connection.ReadBody(content_length, &request.body)) return;
  Handler handler;
  {
    absl::MutexLock lock(&mutex_);
    requests_.push_back(request.target);
    auto it = request_handlers_.find({request.method, request.path});
    if (it != request_handlers_.end()) handler = it->second;
  }
  if (handler) {
    Response response = handler(request);
    return respond(response.status, response.body);
  }
  if (request.authorization != absl::StrCat("Bearer ", token_)) {
    return respond(401, R"({"kind":"Status","code":401})");
  }
  if (request.method == "POST" && request.path == "/fake/compact") {
    Compact();
    return respond(200, "{}");
  }
  if (request.method == "POST" && request.path == "/fake/drop-watches") {
    DropStoredWatches();
    return respond(200, "{}");
  }
  if (std::optional<ResourcePath> stored = ParseResourcePath(request.path); stored.has_value()) {
    bool served;
    {
      absl::MutexLock lock(&mutex_);
      served = store_.Serves(stored->collection);
    }
    if (served)
      return ServeStored(connection, request.method, request.target, *stored, request.body);
  }
  bool watch = absl::StrContains(request.target, "watch=1");
  std::optional<std::pair<std::string, std::vector<std::string>>> list;
  {
    absl::MutexLock lock(&mutex_);
    auto it = lists_.find(request.path);
    if (it != lists_.end()) list = it->second;
  }
  if (!list.has_value()) return respond(404, R"({"kind":"Status","code":404})");
  if (!watch) {
    return respond(
        200, absl::StrCat(R"({"kind":"List","apiVersion":"v1","metadata":{"resourceVersion":")",
                          list->first, R"("},"items":[)", absl::StrJoin(list->second, ","), "]}"));
  }
  const std::string& path = request.path;
  connection.Send(
      "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n");
  int epoch, drop_epoch;
  {
    absl::MutexLock lock(&mutex_);
    epoch = watch_epoch_[path];
    drop_epoch = drop_epoch_[path];
  }
  bool dropped = false;
  while (true) {
    std::deque<std::string> pending;
    {
      absl::MutexLock lock(&mutex_);
      auto ready = [&]() ABSL_SHARED_LOCKS_REQUIRED(mutex_) {
        return stopping_ || !events_[path].empty() || watch_epoch_[path] != epoch ||
               drop_epoch_[path] != drop_epoch;
      };
      mutex_.AwaitWithTimeout(absl::Condition(&ready), absl::Milliseconds(100));
      dropped = drop_epoch_[path] != drop_epoch;
      if (stopping_ || dropped || watch_epoch_[path] != epoch) break;
      pending.swap(events_[path]);
    }
    for (const std::string& event : pending) {
      // Split each event over two chunks, as a real server's framing may.
      size_t half = event.size() / 2;
      connection.Send(absl::StrCat(absl::Hex(half), "\r\n", event.substr(0, half), "\r\n"));
      connection.Send(
          absl::StrCat(absl::Hex(event.size() - half), "\r\n", event.substr(half), "\r\n"));
    }
  }
  if (!dropped) connection.Send("0\r\n\r\n");
  connection.Close();
}

namespace {

// The value of `name` in the query of `target`, percent-decoded; nullopt when absent.
std::optional<std::string> QueryValue(const std::string& target, absl::string_view name) {
  const std::size_t question = target.find('?');
  if (question == std::string::npos) return std::nullopt;
  for (absl::string_view pair : absl::StrSplit(target.substr(question + 1), '&')) {
    const std::size_t equals = pair.find('=');
    if (pair.substr(0, equals) != name) continue;
    std::string value;
    absl::string_view raw = equals == absl::string_view::npos ? "" : pair.substr(equals + 1);
    for (std::size_t i = 0; i < raw.size(); ++i) {
      int byte = 0;
      if (raw[i] == '%' && i + 2 < raw.size() && absl::SimpleHexAtoi(raw.substr(i + 1, 2), &byte)) {
        value.push_back(static_cast<char>(byte));
        i += 2;
      } else {
        value.push_back(raw[i] == '+' ? ' ' : raw[i]);
      }
    }
    return value;
  }
  return std::nullopt;
}

}  // namespace

void FakeApiServer::ServeResource(const std::string& collection, const std::string& kind,
                                  bool namespaced) {
  absl::MutexLock lock(&mutex_);
  store_.Serve(collection, kind, namespaced);
}

ObjectStore::Reply FakeApiServer::Write(const std::string& method, const std::string& path,
                                        const std::string& body) {
  std::optional<ResourcePath> parsed = ParseResourcePath(path);
  absl::MutexLock lock(&mutex_);
  if (!parsed.has_value() || !store_.Serves(parsed->collection)) {
    return {404, StatusJson(404, "NotFound", absl::StrCat(path, " is not a stored resource"))};
  }
  if (method == "POST" && parsed->name.empty()) return store_.Create(*parsed, body);
  if (method == "PUT" && !parsed->name.empty()) return store_.Replace(*parsed, body);
  if (method == "DELETE" && !parsed->name.empty()) return store_.Delete(*parsed);
  return {405, StatusJson(405, "MethodNotAllowed", absl::StrCat(method, " ", path))};
}

int FakeApiServer::CreateObject(const std::string& path, const std::string& json) {
  return Write("POST", path, json).status;
}

int FakeApiServer::ReplaceObject(const std::string& path, const std::string& json) {
  return Write("PUT", path, json).status;
}

int FakeApiServer::DeleteObject(const std::string& path) {
  return Write("DELETE", path, "").status;
}

void FakeApiServer::Compact() {
  absl::MutexLock lock(&mutex_);
  store_.Compact();
}

void FakeApiServer::DropStoredWatches() {
  absl::MutexLock lock(&mutex_);
  ++stored_drop_epoch_;
}

int64_t FakeApiServer::ResourceVersion() {
  absl::MutexLock lock(&mutex_);
  return store_.version();
}

void FakeApiServer::ServeStored(Connection& connection, const std::string& method,
                                const std::string& target, const ResourcePath& path,
                                const std::string& body) {
  auto respond = [&connection](const ObjectStore::Reply& reply) {
    connection.Send(absl::StrCat("HTTP/1.1 ", reply.status,
                                 " X\r\nContent-Type: application/json\r\nContent-Length: ",
                                 reply.body.size(), "\r\n\r\n", reply.body));
    connection.Close();
  };
  if (method != "GET") return respond(Write(method, target.substr(0, target.find('?')), body));
  absl::StatusOr<FieldSelector> selector =
      FieldSelector::Parse(QueryValue(target, "fieldSelector").value_or(""));
  if (!selector.ok()) {
    return respond({400, StatusJson(400, "BadRequest", selector.status().message())});
  }
  const bool watch = QueryValue(target, "watch").value_or("") == "1" ||
                     QueryValue(target, "watch").value_or("") == "true";
  if (!watch) {
    ObjectStore::Reply reply;
    {
      absl::MutexLock lock(&mutex_);
      reply = path.name.empty() ? store_.List(path, *selector) : store_.Get(path);
    }
    return respond(reply);
  }

  connection.Send(
      "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n");
  auto send_event = [&connection](const std::string& type, const JsonValue& object) {
    const std::string line =
        absl::StrCat(R"({"type":")", type, R"(","object":)", SerializeJson(object), "}\n");
    return connection.Send(absl::StrCat(absl::Hex(line.size()), "\r\n", line, "\r\n"));
  };
  const bool bookmarks = QueryValue(target, "allowWatchBookmarks").value_or("") == "true";
  int timeout_seconds = 0;
  (void)absl::SimpleAtoi(QueryValue(target, "timeoutSeconds").value_or("0"), &timeout_seconds);
  const absl::Time end =
      timeout_seconds > 0 ? absl::Now() + absl::Seconds(timeout_seconds) : absl::InfiniteFuture();
  int64_t position = 0;
  int drop_epoch;
  std::vector<WatchEvent> pending;
  const std::string from = QueryValue(target, "resourceVersion").value_or("");
  bool gone = false;
  {
    absl::MutexLock lock(&mutex_);
    drop_epoch = stored_drop_epoch_;
    if (from.empty() || from == "0") {
      pending = store_.CurrentAsAdded(path, *selector);
      position = store_.version();
    } else if (!absl::SimpleAtoi(from, &position)) {
      gone = true;
    } else if (std::optional<std::vector<WatchEvent>> events =
                   store_.EventsAfter(path, *selector, position);
               events.has_value()) {
      pending = *std::move(events);
      position = store_.version();
    } else {
      gone = true;
    }
  }
  if (gone) {
    absl::StatusOr<JsonValue> status =
        ParseJson(StatusJson(410, "Expired", absl::StrCat("too old resource version: ", from)));
    send_event("ERROR", *status);
    connection.Send("0\r\n\r\n");
    connection.Close();
    return;
  }
  absl::Time next_bookmark = absl::Now() + options_.bookmark_interval;
  bool dropped = false;
  while (true) {
    for (const WatchEvent& event : pending) {
      if (!send_event(event.type, event.object)) {
        connection.Close();
        return;
      }
    }
    pending.clear();
    if (bookmarks && absl::Now() >= next_bookmark) {
      int64_t version;
      std::string kind;
      {
        absl::MutexLock lock(&mutex_);
        version = store_.version();
        kind = store_.KindOf(path.collection);
      }
      send_event(
          "BOOKMARK",
          JsonValue::Object(
              {{"kind", JsonValue::String(kind)},
               {"apiVersion", JsonValue::String("v1")},
               {"metadata", JsonValue::Object({{"resourceVersion",
                                                JsonValue::String(absl::StrCat(version))}})}}));
      position = std::max(position, version);
      next_bookmark = absl::Now() + options_.bookmark_interval;
    }
    absl::MutexLock lock(&mutex_);
    auto ready = [&]() ABSL_SHARED_LOCKS_REQUIRED(mutex_) {
      return stopping_ || store_.version() > position || stored_drop_epoch_ != drop_epoch;
    };
    const absl::Time wake =
        std::min(end, bookmarks ? next_bookmark : absl::Now() + absl::Milliseconds(200));
    mutex_.AwaitWithDeadline(absl::Condition(&ready), wake);
    dropped = stored_drop_epoch_ != drop_epoch;
    if (stopping_ || dropped || absl::Now() >= end) break;
    std::optional<std::vector<WatchEvent>> events = store_.EventsAfter(path, *selector, position);
    position = store_.version();
    if (!events.has_value()) break;  // compacted under the watch: the client resumes and is told
    pending = *std::move(events);
  }
  if (!dropped) connection.Send("0\r\n\r\n");
  connection.Close();
}

}  // namespace nodeward::policy::testing
