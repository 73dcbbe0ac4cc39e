#include "policy/yaml_fields.h"

#include "absl/strings/ascii.h"
#include "absl/time/time.h"
#include "common/port_number.h"

namespace nodeward::policy::internal {

absl::Status Context::Error(const YAML::Node& at, absl::string_view field,
                            absl::string_view problem) const {
  std::string where(source_name_);
  if (first_line_ >= 0) {
    YAML::Mark mark = at.IsDefined() ? at.Mark() : YAML::Mark::null_mark();
    if (!mark.is_null()) absl::StrAppend(&where, ":", first_line_ + mark.line + 1);
  }
  absl::string_view object = object_.empty() ? absl::string_view(kind_) : object_;
  return absl::InvalidArgumentError(absl::StrCat(where, ": ", object, ": ", field, ": ", problem));
}

std::string Context::Origin(const YAML::Node& at) const {
  if (first_line_ < 0) return std::string(source_name_);
  YAML::Mark mark = at.Mark();
  if (mark.is_null()) return std::string(source_name_);
  return absl::StrCat(source_name_, ":", first_line_ + mark.line + 1);
}

YAML::Node Child(const YAML::Node& map, const char* key) {
  if (!map.IsDefined() || !map.IsMap()) return YAML::Node(YAML::NodeType::Undefined);
  return map[key];
}

bool Present(const YAML::Node& node) { return node.IsDefined() && !node.IsNull(); }

absl::StatusOr<std::string> String(const Context& ctx, const YAML::Node& map, const char* key,
                                   absl::string_view field) {
  YAML::Node node = Child(map, key);
  if (!Present(node)) return std::string();
  if (!node.IsScalar()) return ctx.Error(node, field, "expected a string");
  return node.Scalar();
}

absl::StatusOr<std::optional<bool>> Bool(const Context& ctx, const YAML::Node& map, const char* key,
                                         absl::string_view field) {
  YAML::Node node = Child(map, key);
  if (!Present(node)) return std::optional<bool>();
  if (node.IsScalar()) {
    std::string value = absl::AsciiStrToLower(node.Scalar());
    if (value == "true") return std::optional<bool>(true);
    if (value == "false") return std::optional<bool>(false);
  }
  return ctx.Error(node, field, "expected true or false");
}

absl::StatusOr<uint32_t> PortNumber(const Context& ctx, const YAML::Node& node,
                                    absl::string_view field) {
  std::optional<uint16_t> port =
      node.IsScalar() ? ParsePortNumber(node.Scalar()) : std::optional<uint16_t>();
  if (!port.has_value() || *port == 0) {
    std::string shown = node.IsScalar() ? absl::StrCat("\"", node.Scalar(), "\"") : "non-scalar";
    return ctx.Error(node, field,
                     absl::StrCat(shown, " is not a port number (1-65535, without leading zeros)"));
  }
  return *port;
}

absl::StatusOr<std::vector<std::string>> StringList(const Context& ctx, const YAML::Node& map,
                                                    const char* key, absl::string_view field) {
  std::vector<std::string> values;
  YAML::Node node = Child(map, key);
  if (!Present(node)) return values;
  if (!node.IsSequence()) return ctx.Error(node, field, "expected a list of strings");
  for (const YAML::Node& item : node) {
    if (!item.IsScalar()) return ctx.Error(item, field, "expected a list of strings");
    values.push_back(item.Scalar());
  }
  return values;
}

absl::StatusOr<std::optional<Labels>> LabelMap(const Context& ctx, const YAML::Node& map,
                                               const char* key, absl::string_view field) {
  YAML::Node node = Child(map, key);
  if (!Present(node)) return std::optional<Labels>();
  if (!node.IsMap()) return ctx.Error(node, field, "expected a map of strings");
  Labels labels;
  for (const auto& entry : node) {
    if (!entry.first.IsScalar() || !(entry.second.IsScalar() || entry.second.IsNull())) {
      return ctx.Error(entry.first, field, "expected a map of strings");
    }
    labels[entry.first.Scalar()] = entry.second.IsNull() ? "" : entry.second.Scalar();
  }
  return std::optional<Labels>(std::move(labels));
}

absl::StatusOr<std::optional<YAML::Node>> Map(const Context& ctx, const YAML::Node& map,
                                              const char* key, absl::string_view field) {
  YAML::Node node = Child(map, key);
  if (!Present(node)) return std::optional<YAML::Node>();
  if (!node.IsMap()) return ctx.Error(node, field, "expected a map");
  return std::optional<YAML::Node>(node);
}

absl::StatusOr<IpAddress> Ip(const Context& ctx, const YAML::Node& node, absl::string_view field) {
  if (!node.IsScalar()) return ctx.Error(node, field, "expected an IP address");
  absl::StatusOr<IpAddress> ip = IpAddress::Parse(node.Scalar());
  if (!ip.ok()) return ctx.Error(node, field, ip.status().message());
  return ip;
}

absl::StatusOr<ObjectMeta> Metadata(Context& ctx, const YAML::Node& object, absl::string_view kind,
                                    bool namespaced) {
  ObjectMeta meta;
  YAML::Node node = Child(object, "metadata");
  if (!Present(node) || !node.IsMap()) return ctx.Error(object, "metadata", "missing or not a map");
  NW_ASSIGN_OR_RETURN(meta.name, String(ctx, node, "name", "metadata.name"));
  if (namespaced) {
    NW_ASSIGN_OR_RETURN(std::string ns, String(ctx, node, "namespace", "metadata.namespace"));
    // kubectl's rule: a namespaced object without a namespace lands in "default".
    meta.ns = ns.empty() ? "default" : std::move(ns);
  }
  ctx.set_object(DescribeObject(kind, meta));
  if (meta.name.empty()) return ctx.Error(node, "metadata.name", "missing");
  NW_ASSIGN_OR_RETURN(std::optional<Labels> labels,
                      LabelMap(ctx, node, "labels", "metadata.labels"));
  if (labels.has_value()) meta.labels = *std::move(labels);
  YAML::Node created = Child(node, "creationTimestamp");
  if (Present(created)) {
    std::string error;
    if (!created.IsScalar() ||
        !absl::ParseTime(absl::RFC3339_full, created.Scalar(), &meta.creation_timestamp, &error)) {
      return ctx.Error(created, "metadata.creationTimestamp", "not an RFC 3339 time");
    }
  }
  NW_ASSIGN_OR_RETURN(meta.resource_version,
                      String(ctx, node, "resourceVersion", "metadata.resourceVersion"));
  NW_ASSIGN_OR_RETURN(meta.uid, String(ctx, node, "uid", "metadata.uid"));
  meta.origin = ctx.Origin(object);
  return meta;
}

}  // namespace nodeward::policy::internal
