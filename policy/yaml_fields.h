// Internal to policy/: reading the fields of one decoded Kubernetes object, with errors that
// name the source, the line, the resource and the field. Shared by the parsers of every kind.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "policy/resources.h"
#include "yaml-cpp/yaml.h"

namespace nodeward::policy::internal {

// Where errors point: the source, and the resource once its metadata is known.
class Context {
 public:
  Context(absl::string_view source_name, int first_line, absl::string_view kind)
      : source_name_(source_name), first_line_(first_line), kind_(kind) {}

  void set_object(std::string description) { object_ = std::move(description); }
  const std::string& object() const { return object_; }

  absl::Status Error(const YAML::Node& at, absl::string_view field,
                     absl::string_view problem) const;
  std::string Origin(const YAML::Node& at) const;

 private:
  absl::string_view source_name_;
  int first_line_;  // of the document in the source, from 0; negative: no line numbers
  absl::string_view kind_;
  std::string object_;
};

// Missing keys of a const map come back as "zombie" nodes whose accessors throw, so every
// lookup goes through here and every use checks IsDefined() first.
YAML::Node Child(const YAML::Node& map, const char* key);
bool Present(const YAML::Node& node);

// Each returns the empty value when the key is absent or null, an error when it holds the
// wrong type.
absl::StatusOr<std::string> String(const Context& ctx, const YAML::Node& map, const char* key,
                                   absl::string_view field);
absl::StatusOr<std::optional<bool>> Bool(const Context& ctx, const YAML::Node& map, const char* key,
                                         absl::string_view field);
absl::StatusOr<std::vector<std::string>> StringList(const Context& ctx, const YAML::Node& map,
                                                    const char* key, absl::string_view field);
absl::StatusOr<std::optional<Labels>> LabelMap(const Context& ctx, const YAML::Node& map,
                                               const char* key, absl::string_view field);
// A map field: nullopt when absent, an error when present but not a map.
absl::StatusOr<std::optional<YAML::Node>> Map(const Context& ctx, const YAML::Node& map,
                                              const char* key, absl::string_view field);

// A port number (1-65535) written in canonical decimal, as a YAML number or string.
absl::StatusOr<uint32_t> PortNumber(const Context& ctx, const YAML::Node& node,
                                    absl::string_view field);
absl::StatusOr<IpAddress> Ip(const Context& ctx, const YAML::Node& node, absl::string_view field);

absl::StatusOr<ObjectMeta> Metadata(Context& ctx, const YAML::Node& object, absl::string_view kind,
                                    bool namespaced);

// Iterates a list field, failing when it is present but not a list or an item is not a map.
// `fn(item, "field[i]")` returns a Status.
template <typename Fn>
absl::Status ForEach(const Context& ctx, const YAML::Node& map, const char* key,
                     absl::string_view field, Fn fn) {
  YAML::Node node = Child(map, key);
  if (!Present(node)) return absl::OkStatus();
  if (!node.IsSequence()) return ctx.Error(node, field, "expected a list");
  size_t index = 0;
  for (const YAML::Node& item : node) {
    std::string item_field = absl::StrCat(field, "[", index++, "]");
    if (!item.IsMap()) return ctx.Error(item, item_field, "expected a map");
    if (absl::Status status = fn(item, item_field); !status.ok()) return status;
  }
  return absl::OkStatus();
}

}  // namespace nodeward::policy::internal

#define NW_ASSIGN_OR_RETURN(lhs, expr)                                                             \
  auto NW_CONCAT(result_, __LINE__) = (expr);                                                      \
  if (!NW_CONCAT(result_, __LINE__).ok()) return std::move(NW_CONCAT(result_, __LINE__)).status(); \
  lhs = *std::move(NW_CONCAT(result_, __LINE__))
#define NW_CONCAT_INNER(a, b) a##b
#define NW_CONCAT(a, b) NW_CONCAT_INNER(a, b)
#define NW_RETURN_IF_ERROR(expr)                      \
  if (absl::Status status_ = (expr); !status_.ok()) { \
    return status_;                                   \
  }
