#include "policy/testing/object_store.h"

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"

namespace nodeward::policy::testing {
namespace {

// History kept between compactions, so a long-running server stays bounded.
constexpr std::size_t kMaxHistory = 10000;

JsonValue* Metadata(JsonValue& object) {
  JsonValue* metadata = object.FindMutable("metadata");
  if (metadata == nullptr || !metadata->is_object()) {
    object.Set("metadata", JsonValue::Object());
    metadata = object.FindMutable("metadata");
  }
  return metadata;
}

std::string MetadataString(const JsonValue& object, absl::string_view field) {
  const JsonValue* metadata = object.Find("metadata");
  return metadata == nullptr ? "" : metadata->StringAt(field);
}

std::string FieldValue(const JsonValue& object, absl::string_view field) {
  if (field == "metadata.name") return MetadataString(object, "name");
  if (field == "metadata.namespace") return MetadataString(object, "namespace");
  const JsonValue* spec = object.Find("spec");
  return spec == nullptr ? "" : spec->StringAt("nodeName");  // spec.nodeName
}

ObjectStore::Reply Error(int code, absl::string_view reason, absl::string_view message) {
  return {code, StatusJson(code, reason, message)};
}

}  // namespace

std::string StatusJson(int code, absl::string_view reason, absl::string_view message) {
  return SerializeJson(JsonValue::Object({{"kind", JsonValue::String("Status")},
                                          {"apiVersion", JsonValue::String("v1")},
                                          {"status", JsonValue::String("Failure")},
                                          {"reason", JsonValue::String(std::string(reason))},
                                          {"message", JsonValue::String(std::string(message))},
                                          {"code", JsonValue::Number(absl::StrCat(code))}}));
}

std::optional<ResourcePath> ParseResourcePath(absl::string_view path) {
  std::vector<std::string> parts = absl::StrSplit(path, '/', absl::SkipEmpty());
  std::size_t prefix;
  if (parts.size() >= 3 && parts[0] == "api") {
    prefix = 2;
  } else if (parts.size() >= 4 && parts[0] == "apis") {
    prefix = 3;
  } else {
    return std::nullopt;
  }
  const std::string base =
      absl::StrCat("/", absl::StrJoin(parts.begin(), parts.begin() + prefix, "/"));
  std::vector<std::string> rest(parts.begin() + prefix, parts.end());
  ResourcePath result;
  if (rest.size() >= 3 && rest[0] == "namespaces") {
    result.ns = rest[1];
    rest.erase(rest.begin(), rest.begin() + 2);
  }
  if (rest.empty() || rest.size() > 2) return std::nullopt;
  result.collection = absl::StrCat(base, "/", rest[0]);
  if (rest.size() == 2) result.name = rest[1];
  return result;
}

absl::StatusOr<FieldSelector> FieldSelector::Parse(absl::string_view text) {
  FieldSelector selector;
  for (absl::string_view term : absl::StrSplit(text, ',', absl::SkipEmpty())) {
    Term parsed;
    std::size_t at;
    if ((at = term.find("!=")) != absl::string_view::npos) {
      parsed.equal = false;
      parsed.field = std::string(term.substr(0, at));
      parsed.value = std::string(term.substr(at + 2));
    } else if ((at = term.find("==")) != absl::string_view::npos) {
      parsed.field = std::string(term.substr(0, at));
      parsed.value = std::string(term.substr(at + 2));
    } else if ((at = term.find('=')) != absl::string_view::npos) {
      parsed.field = std::string(term.substr(0, at));
      parsed.value = std::string(term.substr(at + 1));
    } else {
      return absl::InvalidArgumentError(absl::StrCat("field selector term \"", term, "\""));
    }
    if (parsed.field != "metadata.name" && parsed.field != "metadata.namespace" &&
        parsed.field != "spec.nodeName") {
      return absl::InvalidArgumentError(absl::StrCat("field label not supported: ", parsed.field));
    }
    selector.terms_.push_back(std::move(parsed));
  }
  return selector;
}

bool FieldSelector::Matches(const JsonValue& object) const {
  for (const Term& term : terms_) {
    if ((FieldValue(object, term.field) == term.value) != term.equal) return false;
  }
  return true;
}

void ObjectStore::Serve(const std::string& collection, const std::string& kind, bool namespaced) {
  Resource& resource = resources_[collection];
  resource.kind = kind;
  resource.namespaced = namespaced;
}

const std::string& ObjectStore::KindOf(const std::string& collection) const {
  static const std::string kNone;
  auto it = resources_.find(collection);
  return it == resources_.end() ? kNone : it->second.kind;
}

ObjectStore::Reply ObjectStore::Record(const std::string& collection, const std::string& ns,
                                       const std::string& type, JsonValue object,
                                       JsonValue* stored) {
  ++version_;
  Metadata(object)->Set("resourceVersion", JsonValue::String(absl::StrCat(version_)));
  if (stored != nullptr) *stored = object;
  history_.push_back({collection, ns, {version_, type, object}});
  if (history_.size() > kMaxHistory) {
    compacted_ = history_.front().event.resource_version;
    history_.pop_front();
  }
  return {type == "ADDED" ? 201 : 200, SerializeJson(object)};
}

JsonValue* ObjectStore::Find(const ResourcePath& path, Reply& missing) {
  auto it = resources_.find(path.collection);
  if (it == resources_.end()) {
    missing = Error(404, "NotFound", "no such resource");
    return nullptr;
  }
  auto object = it->second.objects.find(absl::StrCat(path.ns, "/", path.name));
  if (object == it->second.objects.end()) {
    missing = Error(404, "NotFound",
                    absl::StrCat(it->second.kind, " ", path.ns, "/", path.name, " not found"));
    return nullptr;
  }
  return &object->second;
}

ObjectStore::Reply ObjectStore::Create(const ResourcePath& path, absl::string_view body) {
  auto it = resources_.find(path.collection);
  if (it == resources_.end()) return Error(404, "NotFound", "no such resource");
  Resource& resource = it->second;
  absl::StatusOr<JsonValue> object = ParseJson(body);
  if (!object.ok() || !object->is_object()) {
    return Error(400, "BadRequest", object.ok() ? "not an object" : object.status().message());
  }
  JsonValue* metadata = Metadata(*object);
  const std::string name = metadata->StringAt("name");
  if (name.empty()) return Error(422, "Invalid", "metadata.name is required");
  std::string ns;
  if (resource.namespaced) {
    ns = path.ns.empty() ? metadata->StringAt("namespace") : path.ns;
    if (ns.empty() ||
        (!metadata->StringAt("namespace").empty() && metadata->StringAt("namespace") != ns)) {
      return Error(400, "BadRequest",
                   "the namespace of the object and the path differ or are missing");
    }
    metadata->Set("namespace", JsonValue::String(ns));
  }
  const std::string key = absl::StrCat(ns, "/", name);
  if (resource.objects.contains(key)) {
    return Error(409, "AlreadyExists", absl::StrCat(resource.kind, " ", key, " already exists"));
  }
  if (metadata->StringAt("uid").empty()) {
    metadata->Set("uid", JsonValue::String(absl::StrCat("fake-uid-", next_uid_++)));
  }
  if (metadata->StringAt("creationTimestamp").empty()) {
    metadata->Set("creationTimestamp",
                  JsonValue::String(
                      absl::FormatTime("%Y-%m-%dT%H:%M:%SZ", absl::Now(), absl::UTCTimeZone())));
  }
  return Record(path.collection, ns, "ADDED", *std::move(object), &resource.objects[key]);
}

ObjectStore::Reply ObjectStore::Replace(const ResourcePath& path, absl::string_view body) {
  Reply missing;
  JsonValue* existing = Find(path, missing);
  if (existing == nullptr) return missing;
  absl::StatusOr<JsonValue> object = ParseJson(body);
  if (!object.ok() || !object->is_object()) {
    return Error(400, "BadRequest", object.ok() ? "not an object" : object.status().message());
  }
  JsonValue* metadata = Metadata(*object);
  const JsonValue& current = *existing;
  const std::string given = metadata->StringAt("resourceVersion");
  if (!given.empty() && given != MetadataString(current, "resourceVersion")) {
    return Error(409, "Conflict", "the object has been modified; resourceVersion differs");
  }
  if (metadata->StringAt("name") != path.name) {
    return Error(400, "BadRequest", "metadata.name differs from the path");
  }
  for (const char* kept : {"uid", "creationTimestamp", "namespace"}) {
    const std::string value = MetadataString(current, kept);
    if (!value.empty()) metadata->Set(kept, JsonValue::String(value));
  }
  return Record(path.collection, path.ns, "MODIFIED", *std::move(object), existing);
}

ObjectStore::Reply ObjectStore::Delete(const ResourcePath& path) {
  Reply missing;
  JsonValue* existing = Find(path, missing);
  if (existing == nullptr) return missing;
  JsonValue object = std::move(*existing);
  resources_[path.collection].objects.erase(absl::StrCat(path.ns, "/", path.name));
  return Record(path.collection, path.ns, "DELETED", std::move(object), nullptr);
}

ObjectStore::Reply ObjectStore::Get(const ResourcePath& path) const {
  Reply missing;
  const JsonValue* object = const_cast<ObjectStore*>(this)->Find(path, missing);
  return object == nullptr ? missing : Reply{200, SerializeJson(*object)};
}

ObjectStore::Reply ObjectStore::List(const ResourcePath& path,
                                     const FieldSelector& selector) const {
  std::vector<JsonValue> items;
  for (WatchEvent& event : CurrentAsAdded(path, selector)) items.push_back(std::move(event.object));
  JsonValue list = JsonValue::Object(
      {{"kind", JsonValue::String(KindOf(path.collection) + "List")},
       {"apiVersion", JsonValue::String("v1")},
       {"metadata",
        JsonValue::Object({{"resourceVersion", JsonValue::String(absl::StrCat(version_))}})},
       {"items", JsonValue::Array(std::move(items))}});
  return {200, SerializeJson(list)};
}

std::vector<WatchEvent> ObjectStore::CurrentAsAdded(const ResourcePath& path,
                                                    const FieldSelector& selector) const {
  std::vector<WatchEvent> events;
  auto it = resources_.find(path.collection);
  if (it == resources_.end()) return events;
  for (const auto& [key, object] : it->second.objects) {
    if (!path.ns.empty() && MetadataString(object, "namespace") != path.ns) continue;
    if (!selector.Matches(object)) continue;
    int64_t version = 0;
    (void)absl::SimpleAtoi(MetadataString(object, "resourceVersion"), &version);
    events.push_back({version, "ADDED", object});
  }
  return events;
}

std::optional<std::vector<WatchEvent>> ObjectStore::EventsAfter(const ResourcePath& path,
                                                                const FieldSelector& selector,
                                                                int64_t after) const {
  if (after < compacted_) return std::nullopt;
  std::vector<WatchEvent> events;
  for (const Change& change : history_) {
    if (change.event.resource_version <= after || change.collection != path.collection) continue;
    if (!path.ns.empty() && change.ns != path.ns) continue;
    if (!selector.Matches(change.event.object)) continue;
    events.push_back(change.event);
  }
  return events;
}

void ObjectStore::Compact() {
  history_.clear();
  // Even a client that has seen everything must relist: what a test wants to provoke.
  compacted_ = version_ + 1;
}

}  // namespace nodeward::policy::testing
