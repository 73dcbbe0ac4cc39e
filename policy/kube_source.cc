// Over 600 lines on purpose: list, watch, resume from resourceVersion and rebuild the snapshot
// are one loop per kind whose states (synced, relisting, gone) the builder reads; splitting it
// would spread one protocol over files.
#include "policy/kube_source.h"

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <optional>
#include <sstream>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "common/files.h"
#include "common/port_number.h"
#include "crypto/tls.h"
#include "policy/directory_source.h"
#include "policy/http_client.h"
#include "policy/kube_stream.h"
#include "policy/limits.h"
#include "policy/object_parser.h"
#include "yaml-cpp/yaml.h"

namespace nodeward::policy {

struct KubeSource::Kind {
  std::string name;                         // "PeerAuthentication"
  std::string resource;                     // "peerauthentications"
  std::vector<std::string> group_versions;  // tried in order until one is served
  std::string ns;                           // listed in this namespace only; empty: in all of them
  std::string field_selector;               // as written, not yet URL-encoded; or empty
  // Guarded by KubeSource::mutex_.
  std::map<std::string, ResourceSet> objects;  // by "namespace/name"
  bool synced = false;
};

using internal::Connect;
using internal::HostHeader;
using internal::PlainStream;
using internal::Socket;
using internal::TlsStream;

namespace {

// One page of a list (page_size items, each at most ConfigLimits::max_api_object_bytes).
constexpr size_t kMaxListBody = 256u << 20;

struct Connection {
  std::unique_ptr<http::Stream> stream;
};

// Connects to the API server (over TLS verified with `ca_pem` for https) and starts `request`
// with the current token; the stream and the exchange go to `connection` and `exchange`.
absl::StatusOr<http::ResponseHead> OpenExchange(const KubeSourceOptions& options,
                                                const std::string& ca_pem,
                                                const std::atomic<bool>& stopping,
                                                http::Request request, Connection& connection,
                                                std::unique_ptr<http::Exchange>& exchange) {
  absl::StatusOr<std::unique_ptr<Socket>> socket = Connect(options, stopping);
  if (!socket.ok()) return socket.status();
  if (options.scheme == "https") {
    crypto::OriginationSettings settings;
    settings.mode = crypto::OriginationSettings::Mode::kSimple;
    settings.ca_certificates_pem = ca_pem;
    settings.subject_alt_names = options.server_names;
    if (settings.subject_alt_names.empty()) settings.subject_alt_names = {options.host};
    settings.sni = options.host;
    settings.alpn = {"http/1.1"};
    absl::StatusOr<std::shared_ptr<const crypto::TlsContext>> context =
        crypto::TlsContext::OriginationClient(settings);
    if (!context.ok()) return context.status();
    auto tls = std::make_unique<TlsStream>(
        *std::move(socket), crypto::TlsEngine::Client(*std::move(context)), options.io_timeout);
    if (absl::Status status = tls->Handshake(); !status.ok()) return status;
    connection.stream = std::move(tls);
  } else {
    connection.stream = std::make_unique<PlainStream>(*std::move(socket), options.io_timeout);
  }
  request.host = HostHeader(options);
  request.headers.emplace_back("Accept", "application/json");
  request.headers.emplace_back("User-Agent", "nodeward");
  absl::StatusOr<std::string> token = ReadFile(options.token_path);
  if (token.ok()) {
    request.headers.emplace_back("Authorization",
                                 absl::StrCat("Bearer ", absl::StripAsciiWhitespace(*token)));
  }
  exchange = std::make_unique<http::Exchange>(*connection.stream);
  return exchange->Start(request);
}

std::string ScalarAt(const YAML::Node& node, const char* first, const char* second = nullptr) {
  if (!node.IsDefined() || !node.IsMap()) return "";
  YAML::Node child = node[first];
  if (second == nullptr) return internal::ScalarField(node, first);
  return internal::ScalarField(child, second);
}

std::string ObjectKey(const YAML::Node& object) {
  return absl::StrCat(ScalarAt(object, "metadata", "namespace"), "/",
                      ScalarAt(object, "metadata", "name"));
}

// Parses `text` as one JSON (or YAML) value, turning parser exceptions into errors.
absl::StatusOr<YAML::Node> ParseJson(absl::string_view text, absl::string_view what) {
  try {
    return YAML::Load(std::string(text));
  } catch (const YAML::Exception& e) {
    return absl::DataLossError(absl::StrCat(what, ": invalid JSON: ", e.msg));
  }
}

// Percent-encodes what a query value may not carry as it is (RFC 3986 unreserved stay).
std::string QueryEscape(absl::string_view value) {
  std::string out;
  for (const char c : value) {
    if (absl::ascii_isalnum(c) || c == '-' || c == '.' || c == '_' || c == '~') {
      out.push_back(c);
    } else {
      absl::StrAppend(&out, absl::StrFormat("%%%02X", static_cast<unsigned char>(c)));
    }
  }
  return out;
}

}  // namespace

absl::StatusOr<KubeSourceOptions> KubeSourceOptions::InCluster() {
  KubeSourceOptions options;
  const char* host = std::getenv("KUBERNETES_SERVICE_HOST");
  const char* port = std::getenv("KUBERNETES_SERVICE_PORT");
  if (host == nullptr || *host == '\0') {
    return absl::FailedPreconditionError(
        "KUBERNETES_SERVICE_HOST is not set: not running in a Kubernetes pod");
  }
  options.host = host;
  if (port != nullptr && *port != '\0') {
    std::optional<uint16_t> value = ParsePortNumber(port);
    if (!value.has_value()) {
      return absl::InvalidArgumentError(
          absl::StrCat("KUBERNETES_SERVICE_PORT \"", port, "\" is not a port"));
    }
    options.port = *value;
  }
  // The API server certificate names its service, not necessarily the service IP.
  options.server_names = {options.host, "kubernetes.default.svc",
                          "kubernetes.default.svc.cluster.local"};
  return options;
}

absl::StatusOr<std::unique_ptr<KubeSource>> KubeSource::Start(KubeSourceOptions options) {
  if (options.host.empty()) return absl::InvalidArgumentError("no API server host");
  if (options.scheme != "https" && options.scheme != "http") {
    return absl::InvalidArgumentError(absl::StrCat("unsupported scheme ", options.scheme));
  }
  std::unique_ptr<KubeSource> source(new KubeSource(std::move(options)));
  if (source->options_.scheme == "https") {
    absl::StatusOr<std::string> ca = ReadFile(source->options_.ca_path);
    if (!ca.ok()) return ca.status();
    source->ca_pem_ = *std::move(ca);
  }
  auto add = [&](std::string name, std::string resource, std::vector<std::string> versions) {
    auto kind = std::make_unique<Kind>();
    kind->name = std::move(name);
    kind->resource = std::move(resource);
    kind->group_versions = std::move(versions);
    source->kinds_.push_back(std::move(kind));
  };
  add("Namespace", "namespaces", {"v1"});
  add("Pod", "pods", {"v1"});
  add("Service", "services", {"v1"});
  add("EndpointSlice", "endpointslices", {"discovery.k8s.io/v1"});
  add("PeerAuthentication", "peerauthentications",
      {"security.istio.io/v1", "security.istio.io/v1beta1"});
  add("DestinationRule", "destinationrules",
      {"networking.istio.io/v1", "networking.istio.io/v1beta1", "networking.istio.io/v1alpha3"});
  add("AuthorizationPolicy", "authorizationpolicies",
      {"security.istio.io/v1", "security.istio.io/v1beta1"});
  if (!source->options_.gateway_namespace.empty()) {
    add("Gateway", "gateways",
        {"networking.istio.io/v1", "networking.istio.io/v1beta1", "networking.istio.io/v1alpha3"});
    add("VirtualService", "virtualservices",
        {"networking.istio.io/v1", "networking.istio.io/v1beta1", "networking.istio.io/v1alpha3"});
    add("Secret", "secrets", {"v1"});
    source->kinds_.back()->ns = source->options_.gateway_namespace;
    // As Istio's credential controller: Helm releases and service account tokens are large,
    // common and never a credentialName.
    source->kinds_.back()->field_selector =
        "type!=helm.sh/release.v1,type!=kubernetes.io/service-account-token";
  }
  if (!source->options_.kinds.empty()) {
    for (const std::string& wanted : source->options_.kinds) {
      if (std::none_of(source->kinds_.begin(), source->kinds_.end(),
                       [&](const auto& kind) { return kind->name == wanted; })) {
        return absl::InvalidArgumentError(absl::StrCat("unknown kind \"", wanted, "\""));
      }
    }
    std::erase_if(source->kinds_, [&](const auto& kind) {
      return std::find(source->options_.kinds.begin(), source->options_.kinds.end(), kind->name) ==
             source->options_.kinds.end();
    });
  }
  for (size_t i = 0; i < source->kinds_.size(); ++i) {
    source->threads_.emplace_back([raw = source.get(), i] { raw->RunKind(i); });
  }
  source->threads_.emplace_back([raw = source.get()] { raw->RunBuilder(); });
  return source;
}

KubeSource::KubeSource(KubeSourceOptions options)
    : options_(std::move(options)),
      publisher_(absl::StrCat("kubernetes ", options_.scheme, "://", HostHeader(options_))) {}

KubeSource::~KubeSource() {
  stopping_.store(true);
  {
    absl::MutexLock lock(&mutex_);
    stop_requested_ = true;
  }
  for (std::thread& thread : threads_) thread.join();
}

bool KubeSource::WaitForSync(absl::Duration timeout) const {
  absl::Time deadline = absl::Now() + timeout;
  while (publisher_.Current() == nullptr) {
    if (absl::Now() >= deadline) return false;
    absl::SleepFor(absl::Milliseconds(10));
  }
  return true;
}

bool KubeSource::Sleep(absl::Duration duration) {
  absl::MutexLock lock(&mutex_);
  auto stop = [this]() ABSL_SHARED_LOCKS_REQUIRED(mutex_) { return stop_requested_; };
  mutex_.AwaitWithTimeout(absl::Condition(&stop), duration);
  return !stop_requested_;
}

void KubeSource::MarkDirty() {
  absl::MutexLock lock(&mutex_);
  dirty_ = true;
}

void KubeSource::ReportError(absl::Status error) { publisher_.RecordFailure(std::move(error)); }

namespace {

enum class WatchEnd { kResume, kRelist };

}  // namespace

void KubeSource::RunKind(size_t index) {
  Kind& kind = *kinds_[index];
  size_t version = 0;
  std::string resource_version;
  bool need_list = true;
  absl::Duration backoff = options_.initial_backoff;

  auto open = [&](const std::string& target, Connection& connection,
                  std::unique_ptr<http::Exchange>& exchange) -> absl::StatusOr<http::ResponseHead> {
    http::Request request;
    request.target = target;
    return OpenExchange(options_, ca_pem_, stopping_, std::move(request), connection, exchange);
  };

  auto base_path = [&]() {
    const std::string& gv = kind.group_versions[version];
    const std::string scope = kind.ns.empty() ? "" : absl::StrCat("namespaces/", kind.ns, "/");
    return gv.find('/') == std::string::npos
               ? absl::StrCat("/api/", gv, "/", scope, kind.resource)
               : absl::StrCat("/apis/", gv, "/", scope, kind.resource);
  };
  // Query parameters every list and watch of this kind carries.
  std::string field_selector = kind.field_selector;
  if (kind.name == "Pod" && !options_.pod_field_selector.empty()) {
    field_selector = options_.pod_field_selector;
  }
  const std::string selector =
      field_selector.empty() ? "" : absl::StrCat("&fieldSelector=", QueryEscape(field_selector));

  auto record_invalid = [&](const std::string& key, absl::Status status) {
    absl::MutexLock lock(&mutex_);
    std::string label = absl::StrCat(kind.name, " ", key);
    if (status.ok()) {
      invalid_objects_.erase(label);
    } else {
      invalid_objects_[label] = std::string(status.message());
    }
  };

  // Parses one object into its own ResourceSet; errors name the object.
  auto parse = [&](const YAML::Node& object) -> absl::StatusOr<ResourceSet> {
    ResourceSet one;
    absl::Status status =
        internal::AppendObject(object, kind.name, kind.group_versions[version],
                               absl::StrCat("api ", base_path()), /*first_line=*/-1, one);
    if (!status.ok()) return status;
    return one;
  };

  // What keeps the place of an object the API served that does not parse: its last good
  // version, or, for an AuthorizationPolicy never seen valid, a stand-in that fails closed (a
  // policy left out could turn "allow only these" into "allow everything"). Nothing for other
  // kinds, which are left out as before.
  auto stand_in = [&](const std::string& key, const YAML::Node& object,
                      const absl::Status& error) -> std::optional<ResourceSet> {
    {
      absl::MutexLock lock(&mutex_);
      auto previous = kind.objects.find(key);
      if (previous != kind.objects.end()) return previous->second;
    }
    if (kind.name != "AuthorizationPolicy") return std::nullopt;
    ResourceSet one;
    one.authorization_policies.push_back(
        internal::RejectedAuthorizationPolicy(object, std::string(error.message())));
    return one;
  };
  const size_t max_objects = MaxObjectsOfKind(options_.snapshot.limits, kind.name);
  auto too_many = [&](size_t count) {
    return absl::ResourceExhaustedError(
        absl::StrCat(kind.resource, ": more than ", max_objects, " objects (", count, " seen)"));
  };

  // Lists every page; on success replaces the kind's objects and sets resource_version.
  auto list = [&]() -> absl::Status {
    std::map<std::string, ResourceSet> objects;
    std::map<std::string, std::string> invalid;
    std::string continue_token;
    std::string list_version;
    while (!stopping_.load()) {
      std::string target = absl::StrCat(base_path(), "?limit=", options_.page_size, selector);
      if (!continue_token.empty()) absl::StrAppend(&target, "&continue=", continue_token);
      Connection connection;
      std::unique_ptr<http::Exchange> exchange;
      absl::StatusOr<http::ResponseHead> head = open(target, connection, exchange);
      if (!head.ok()) return head.status();
      absl::StatusOr<std::string> body = exchange->ReadAll(kMaxListBody);
      if (!body.ok()) return body.status();
      if (head->status == 404 && continue_token.empty() &&
          version + 1 < kind.group_versions.size()) {
        ++version;  // the CRD may serve only an older API version
        continue;
      }
      if (head->status == 404) return absl::NotFoundError(absl::StrCat("list ", target, ": 404"));
      if (head->status != 200) {
        return absl::UnavailableError(
            absl::StrCat("list ", target, ": HTTP ", head->status, " ", body->substr(0, 200)));
      }
      absl::StatusOr<YAML::Node> root = ParseJson(*body, absl::StrCat("list ", target));
      if (!root.ok()) return root.status();
      if (!root->IsMap()) {
        return absl::DataLossError(absl::StrCat("list ", target, ": not an object"));
      }
      list_version = ScalarAt(*root, "metadata", "resourceVersion");
      continue_token = ScalarAt(*root, "metadata", "continue");
      YAML::Node items = (*root)["items"];
      if (items.IsDefined() && items.IsSequence()) {
        for (const YAML::Node& item : items) {
          std::string key = ObjectKey(item);
          absl::StatusOr<ResourceSet> one = parse(item);
          if (one.ok()) {
            objects[key] = *std::move(one);
          } else {
            invalid[absl::StrCat(kind.name, " ", key)] = std::string(one.status().message());
            if (std::optional<ResourceSet> kept = stand_in(key, item, one.status())) {
              objects[key] = *std::move(kept);
            }
          }
        }
      }
      // Stop reading as soon as there are too many: the kind's last good objects stay.
      if (objects.size() > max_objects) return too_many(objects.size());
      if (continue_token.empty()) break;
    }
    if (stopping_.load()) return absl::CancelledError("source stopping");
    {
      absl::MutexLock lock(&mutex_);
      kind.objects = std::move(objects);
      kind.synced = true;
      dirty_ = true;
      std::string prefix = absl::StrCat(kind.name, " ");
      for (auto it = invalid_objects_.begin(); it != invalid_objects_.end();) {
        it = absl::StartsWith(it->first, prefix) ? invalid_objects_.erase(it) : std::next(it);
      }
      invalid_objects_.merge(invalid);
    }
    resource_version = list_version;
    return absl::OkStatus();
  };

  // Follows one watch request to its end.
  auto watch = [&]() -> absl::StatusOr<WatchEnd> {
    std::string target = absl::StrCat(
        base_path(), "?watch=1&allowWatchBookmarks=true&resourceVersion=", resource_version,
        "&timeoutSeconds=", options_.watch_timeout_seconds, selector);
    Connection connection;
    std::unique_ptr<http::Exchange> exchange;
    absl::StatusOr<http::ResponseHead> head = open(target, connection, exchange);
    if (!head.ok()) return head.status();
    if (head->status == 410) return WatchEnd::kRelist;
    if (head->status != 200) {
      absl::StatusOr<std::string> body = exchange->ReadAll(64 * 1024);
      return absl::UnavailableError(absl::StrCat("watch ", target, ": HTTP ", head->status, " ",
                                                 body.ok() ? body->substr(0, 200) : ""));
    }
    // A watch is quiet between events: allow the server its timeout plus slack.
    absl::Duration idle = absl::Seconds(options_.watch_timeout_seconds) + options_.io_timeout;
    if (auto* tls = dynamic_cast<TlsStream*>(connection.stream.get())) tls->set_idle_limit(idle);
    if (auto* plain = dynamic_cast<PlainStream*>(connection.stream.get())) {
      plain->set_idle_limit(idle);
    }
    std::string pending;
    while (true) {
      absl::StatusOr<bool> more = exchange->ReadBody(pending);
      if (!more.ok()) return more.status();
      size_t newline;
      while ((newline = pending.find('\n')) != std::string::npos) {
        std::string line = pending.substr(0, newline);
        pending.erase(0, newline + 1);
        if (absl::StripAsciiWhitespace(line).empty()) continue;
        absl::StatusOr<YAML::Node> event = ParseJson(line, absl::StrCat("watch ", base_path()));
        if (!event.ok()) return event.status();
        std::string type = ScalarAt(*event, "type");
        YAML::Node object = event->IsMap() ? (*event)["object"] : YAML::Node();
        if (type == "ERROR") {
          std::string code = ScalarAt(object, "code");
          if (code == "410") return WatchEnd::kRelist;
          return absl::UnavailableError(absl::StrCat("watch ", base_path(), ": error ", code, " ",
                                                     ScalarAt(object, "message")));
        }
        std::string version_seen = ScalarAt(object, "metadata", "resourceVersion");
        if (type == "BOOKMARK") {
          if (!version_seen.empty()) resource_version = version_seen;
          continue;
        }
        if (type != "ADDED" && type != "MODIFIED" && type != "DELETED") {
          return absl::DataLossError(
              absl::StrCat("watch ", base_path(), ": unknown event type \"", type, "\""));
        }
        std::string key = ObjectKey(object);
        if (type == "DELETED") {
          record_invalid(key, absl::OkStatus());
          absl::MutexLock lock(&mutex_);
          kind.objects.erase(key);
          dirty_ = true;
        } else {
          absl::StatusOr<ResourceSet> one = parse(object);
          record_invalid(key, one.status());
          // An object that stops parsing keeps its last good version (or a stand-in).
          if (!one.ok()) {
            std::optional<ResourceSet> kept = stand_in(key, object, one.status());
            one = kept.has_value() ? absl::StatusOr<ResourceSet>(*std::move(kept)) : one.status();
          }
          if (one.ok()) {
            absl::MutexLock lock(&mutex_);
            if (!kind.objects.contains(key) && kind.objects.size() >= max_objects) {
              return too_many(kind.objects.size() + 1);
            }
            kind.objects[key] = *std::move(one);
            dirty_ = true;
          } else {
            MarkDirty();  // so the error shows in Status()
          }
        }
        if (!version_seen.empty()) resource_version = version_seen;
      }
      if (pending.size() > options_.snapshot.limits.max_api_object_bytes) {
        return absl::ResourceExhaustedError(
            absl::StrCat("watch ", base_path(), ": an event over ",
                         options_.snapshot.limits.max_api_object_bytes, " bytes"));
      }
      if (!*more) return WatchEnd::kResume;
    }
  };

  while (!stopping_.load()) {
    if (need_list) {
      absl::Status status = list();
      if (status.code() == absl::StatusCode::kNotFound) {
        // The CRD is not installed: nothing of this kind exists. Look again later.
        {
          absl::MutexLock lock(&mutex_);
          if (!kind.objects.empty() || !kind.synced) dirty_ = true;
          kind.objects.clear();
          kind.synced = true;
        }
        version = 0;
        if (!Sleep(options_.max_backoff)) return;
        continue;
      }
      if (!status.ok()) {
        if (stopping_.load()) return;
        ReportError(
            absl::Status(status.code(), absl::StrCat(kind.resource, ": ", status.message())));
        if (!Sleep(backoff)) return;
        backoff = std::min(backoff * 2, options_.max_backoff);
        continue;
      }
      need_list = false;
      backoff = options_.initial_backoff;
    }
    absl::StatusOr<WatchEnd> end = watch();
    if (stopping_.load()) return;
    if (end.ok()) {
      if (*end == WatchEnd::kRelist) need_list = true;
      backoff = options_.initial_backoff;
      continue;
    }
    ReportError(absl::Status(end.status().code(),
                             absl::StrCat(kind.resource, ": ", end.status().message())));
    if (!Sleep(backoff)) return;
    backoff = std::min(backoff * 2, options_.max_backoff);
  }
}

void KubeSource::RunBuilder() {
  uint64_t generation = 0;
  while (true) {
    {
      absl::MutexLock lock(&mutex_);
      auto ready = [this]() ABSL_SHARED_LOCKS_REQUIRED(mutex_) {
        if (stop_requested_) return true;
        if (!dirty_) return false;
        for (const auto& kind : kinds_) {
          if (!kind->synced) return false;
        }
        return true;
      };
      mutex_.Await(absl::Condition(&ready));
      if (stop_requested_) return;
    }
    // Let a burst of events settle into one snapshot.
    if (!Sleep(options_.debounce)) return;
    ResourceSet resources;
    std::string invalid;
    {
      absl::MutexLock lock(&mutex_);
      dirty_ = false;
      for (const auto& kind : kinds_) {
        for (const auto& [key, one] : kind->objects) resources.Append(ResourceSet(one));
      }
      for (const auto& [object, error] : invalid_objects_) {
        absl::StrAppend(&invalid, invalid.empty() ? "" : "; ", error);
      }
    }
    absl::StatusOr<std::shared_ptr<const Snapshot>> snapshot =
        Snapshot::Build(std::move(resources), options_.snapshot, generation + 1);
    if (!snapshot.ok()) {
      ReportError(snapshot.status());
      continue;
    }
    ++generation;
    publisher_.Publish(*std::move(snapshot));
    if (!invalid.empty()) {
      ReportError(absl::InvalidArgumentError(
          absl::StrCat("objects that do not parse (each keeps its last good version; an "
                       "AuthorizationPolicy never seen valid stands in failing closed; others "
                       "are left out): ",
                       invalid)));
    }
  }
}

absl::StatusOr<KubeResponse> KubeRequest(const KubeSourceOptions& options,
                                         const std::string& method, const std::string& target,
                                         const std::string& json_body, size_t limit) {
  std::string ca_pem;
  if (options.scheme == "https") {
    absl::StatusOr<std::string> ca = ReadFile(options.ca_path);
    if (!ca.ok()) return ca.status();
    ca_pem = *std::move(ca);
  }
  http::Request request;
  request.method = method;
  request.target = target;
  if (!json_body.empty()) request.headers.emplace_back("Content-Type", "application/json");
  request.body = json_body;
  const std::atomic<bool> never_stopping{false};
  Connection connection;
  std::unique_ptr<http::Exchange> exchange;
  absl::StatusOr<http::ResponseHead> head =
      OpenExchange(options, ca_pem, never_stopping, std::move(request), connection, exchange);
  if (!head.ok()) return head.status();
  absl::StatusOr<std::string> body = exchange->ReadAll(limit);
  if (!body.ok()) return body.status();
  return KubeResponse{head->status, *std::move(body)};
}

const char* ObjectPresenceName(ObjectPresence presence) {
  switch (presence) {
    case ObjectPresence::kPresent:
      return "present";
    case ObjectPresence::kBeingDeleted:
      return "being deleted";
    case ObjectPresence::kAbsent:
      return "absent";
    case ObjectPresence::kForbidden:
      return "forbidden";
  }
  return "?";
}

absl::StatusOr<ObjectPresence> GetObjectPresence(const KubeSourceOptions& options,
                                                 const std::string& path) {
  absl::StatusOr<KubeResponse> answer = KubeRequest(options, "GET", path, "");
  if (!answer.ok()) return answer.status();
  if (answer->status == 404) return ObjectPresence::kAbsent;
  if (answer->status == 401 || answer->status == 403) return ObjectPresence::kForbidden;
  if (answer->status != 200) {
    return absl::UnavailableError(
        absl::StrCat("GET ", path, ": HTTP ", answer->status, " ", answer->body.substr(0, 200)));
  }
  absl::StatusOr<YAML::Node> object = ParseJson(answer->body, absl::StrCat("GET ", path));
  if (!object.ok()) return object.status();
  return ScalarAt(*object, "metadata", "deletionTimestamp").empty() ? ObjectPresence::kPresent
                                                                    : ObjectPresence::kBeingDeleted;
}

absl::StatusOr<std::unique_ptr<ConfigSource>> StartDirectoryOrKubeSource(
    const std::string& directory, SnapshotOptions snapshot, const std::string& gateway_namespace) {
  if (!directory.empty()) {
    DirectorySource::Options options;
    options.directory = directory;
    options.snapshot = std::move(snapshot);
    absl::StatusOr<std::unique_ptr<DirectorySource>> source = DirectorySource::Start(options);
    if (!source.ok()) return source.status();
    return std::unique_ptr<ConfigSource>(*std::move(source));
  }
  absl::StatusOr<KubeSourceOptions> options = KubeSourceOptions::InCluster();
  if (!options.ok()) {
    return absl::FailedPreconditionError(absl::StrCat(
        "no configuration directory and not in a cluster: ", options.status().message()));
  }
  options->snapshot = std::move(snapshot);
  options->gateway_namespace = gateway_namespace;
  absl::StatusOr<std::unique_ptr<KubeSource>> source = KubeSource::Start(*std::move(options));
  if (!source.ok()) return source.status();
  return std::unique_ptr<ConfigSource>(*std::move(source));
}

}  // namespace nodeward::policy
