// The node's CNI configuration, as nodeward-cni's installer changes it: our entry appended
// to the plugin chain of the configuration the runtime uses (the first file of the directory
// in lexical order, as libcni and the kubelet pick it), and taken out again on uninstall. The
// rest of the file stays as the primary CNI wrote it.
#pragma once

#include <optional>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "common/json.h"

namespace nodeward::cni {

inline constexpr char kPluginType[] = "nodeward-cni";

// The file of `net_dir` the runtime reads (*.conflist, *.conf, *.json, first by name);
// NotFound while the primary CNI has not written one.
absl::StatusOr<std::string> FindPrimaryConfig(const std::string& net_dir);

// `text` (a conflist, or a single-plugin .conf, which becomes a conflist) with `entry` as the
// last plugin of the chain; an earlier entry of ours is replaced. `entry` gets the type.
absl::StatusOr<std::string> InsertPlugin(absl::string_view text, JsonValue entry);
// `text` without our entries; nullopt when it has none.
absl::StatusOr<std::optional<std::string>> RemovePlugin(absl::string_view text);

struct InstallOptions {
  std::string net_dir;  // the node's CNI configuration directory
  std::string bin_dir;  // the node's CNI plugin directory
  std::string binary;   // what is copied there as nodeward-cni
  JsonValue entry = JsonValue::Object();
};

// Copies the binary (atomically) and inserts the entry into the primary configuration. A .conf
// is rewritten as a .conflist of the same name. Idempotent: files already right are left.
absl::Status Install(const InstallOptions& options);
// Our entry in the primary configuration, as the installer wrote it; nullopt when it has none.
absl::StatusOr<std::optional<JsonValue>> FindEntry(const std::string& net_dir);

enum class EntryUpdate { kReplace, kOnlyIfMissing };
// Puts `entry` into the primary configuration (kOnlyIfMissing: only when it has none of ours,
// as after the node's CNI rewrote its file), as InsertPlugin does. Whether the file changed.
absl::StatusOr<bool> EnsureEntry(const std::string& net_dir, const JsonValue& entry,
                                 EntryUpdate update);
// Removes our entries from every configuration of `net_dir` and the binary from `bin_dir`.
absl::Status Uninstall(const std::string& net_dir, const std::string& bin_dir);

// Writes `contents` to `path` through a temporary file and a rename, with `mode`.
absl::Status WriteFileAtomically(const std::string& path, absl::string_view contents, int mode);

}  // namespace nodeward::cni
