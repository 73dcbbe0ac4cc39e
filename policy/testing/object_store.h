// The object store behind the fake API server's served resources, with the Kubernetes API's
// semantics where clients depend on them: every change takes the next resourceVersion of one
// counter shared by all resources, a watch from a resourceVersion replays the changes after
// it (or learns "410 Gone" when that history was compacted away), deletes are DELETED events
// carrying a new resourceVersion, and field selectors on metadata.name, metadata.namespace and
// spec.nodeName filter lists and watches. Not thread-safe: the server holds its lock.
#pragma once

#include <cstdint>
#include <deque>
#include <map>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "common/json.h"

namespace nodeward::policy::testing {

// "/api/v1/namespaces/shop/pods/web" -> {"/api/v1/pods", "shop", "web"};
// "/api/v1/namespaces/shop" -> {"/api/v1/namespaces", "", "shop"}.
struct ResourcePath {
  std::string collection;
  std::string ns;
  std::string name;
};
std::optional<ResourcePath> ParseResourcePath(absl::string_view path);

// "spec.nodeName=node-a,metadata.namespace!=kube-system"
class FieldSelector {
 public:
  static absl::StatusOr<FieldSelector> Parse(absl::string_view text);
  bool Matches(const JsonValue& object) const;

 private:
  struct Term {
    std::string field;
    std::string value;
    bool equal = true;
  };
  std::vector<Term> terms_;
};

struct WatchEvent {
  int64_t resource_version = 0;
  std::string type;  // ADDED, MODIFIED, DELETED
  JsonValue object;
};

class ObjectStore {
 public:
  struct Reply {
    int status = 200;
    std::string body;  // JSON
  };

  // Serves `collection` (e.g. "/api/v1/pods"); `namespaced` says whether its objects live in
  // namespaces; `kind` names its lists ("PodList").
  void Serve(const std::string& collection, const std::string& kind, bool namespaced);
  bool Serves(const std::string& collection) const { return resources_.contains(collection); }
  int64_t version() const { return version_; }

  Reply Create(const ResourcePath& path, absl::string_view body);
  // A resourceVersion in `body` must be the object's current one (409 otherwise).
  Reply Replace(const ResourcePath& path, absl::string_view body);
  Reply Delete(const ResourcePath& path);
  Reply Get(const ResourcePath& path) const;
  Reply List(const ResourcePath& path, const FieldSelector& selector) const;

  // The changes of `path`'s collection (and namespace, when given) after `after`, in order;
  // nullopt when `after` is older than the history kept (the client must relist).
  std::optional<std::vector<WatchEvent>> EventsAfter(const ResourcePath& path,
                                                     const FieldSelector& selector,
                                                     int64_t after) const;
  // Every matching object as an ADDED event: a watch that gives no resourceVersion.
  std::vector<WatchEvent> CurrentAsAdded(const ResourcePath& path,
                                         const FieldSelector& selector) const;
  // Forgets the history: watches resuming from any version up to now are told 410 Gone.
  void Compact();
  const std::string& KindOf(const std::string& collection) const;

 private:
  struct Resource {
    std::string kind;
    bool namespaced = true;
    std::map<std::string, JsonValue> objects;  // by "namespace/name"
  };
  struct Change {
    std::string collection;
    std::string ns;
    WatchEvent event;
  };

  // Gives `object` the next resourceVersion, keeps it in `stored` (unless null: a delete) and
  // in the history.
  Reply Record(const std::string& collection, const std::string& ns, const std::string& type,
               JsonValue object, JsonValue* stored);
  // The object at `path`, or null with the 404 to answer in `missing`.
  JsonValue* Find(const ResourcePath& path, Reply& missing);

  std::map<std::string, Resource> resources_;
  std::deque<Change> history_;
  int64_t version_ = 1000;
  int64_t compacted_ = 1000;  // watches from before this get 410
  int64_t next_uid_ = 1;
};

// An apiserver Status body: {"kind":"Status","code":code,"reason":...,"message":...}.
std::string StatusJson(int code, absl::string_view reason, absl::string_view message);

}  // namespace nodeward::policy::testing
