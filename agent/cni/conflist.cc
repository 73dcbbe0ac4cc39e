#include "agent/cni/conflist.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "common/files.h"

namespace nodeward::cni {
namespace {

bool IsConfigName(absl::string_view name) {
  return absl::EndsWith(name, ".conflist") || absl::EndsWith(name, ".conf") ||
         absl::EndsWith(name, ".json");
}

absl::StatusOr<std::vector<std::string>> ConfigFiles(const std::string& net_dir) {
  DIR* dir = opendir(net_dir.c_str());
  if (dir == nullptr) return absl::ErrnoToStatus(errno, absl::StrCat("read ", net_dir));
  std::vector<std::string> names;
  while (dirent* entry = readdir(dir)) {
    std::string name = entry->d_name;
    if (name.front() != '.' && IsConfigName(name)) names.push_back(std::move(name));
  }
  closedir(dir);
  std::sort(names.begin(), names.end());
  return names;
}

absl::StatusOr<JsonValue> ParseConfig(absl::string_view text) {
  absl::StatusOr<JsonValue> parsed = ParseJson(text);
  if (!parsed.ok()) return parsed.status();
  if (!parsed->is_object()) return absl::InvalidArgumentError("not a JSON object");
  return parsed;
}

bool IsOurs(const JsonValue& plugin) { return plugin.StringAt("type") == kPluginType; }

// Removes our entries from the plugins array by cutting their bytes out of `text`, so the
// rest of the file keeps its formatting. Returns whether anything was cut.
bool CutOurEntries(std::string& text, const JsonValue& plugins) {
  const std::vector<JsonValue>& items = plugins.items();
  bool cut = false;
  for (std::size_t i = items.size(); i-- > 0;) {
    if (!IsOurs(items[i])) continue;
    std::size_t from = items[i].source_offset();
    std::size_t to = from + items[i].source_length();
    if (i > 0) {
      from = items[i - 1].source_offset() + items[i - 1].source_length();  // with its comma
    } else if (items.size() > 1) {
      to = items[1].source_offset();
    }
    text.erase(from, to - from);
    cut = true;
  }
  return cut;
}

}  // namespace

absl::StatusOr<std::string> FindPrimaryConfig(const std::string& net_dir) {
  absl::StatusOr<std::vector<std::string>> names = ConfigFiles(net_dir);
  if (!names.ok()) return names.status();
  if (names->empty()) {
    return absl::NotFoundError(
        absl::StrCat("no CNI configuration in ", net_dir, " yet (the node's CNI writes one)"));
  }
  return absl::StrCat(net_dir, "/", names->front());
}

absl::StatusOr<std::string> InsertPlugin(absl::string_view text, JsonValue entry) {
  entry.Set("type", JsonValue::String(kPluginType));
  absl::StatusOr<JsonValue> config = ParseConfig(text);
  if (!config.ok()) return config.status();
  const JsonValue* plugins = config->Find("plugins");
  if (plugins == nullptr) {
    // A single-plugin .conf: the chain is that plugin, then ours.
    if (config->StringAt("type").empty()) {
      return absl::InvalidArgumentError("neither a conflist (\"plugins\") nor a plugin (\"type\")");
    }
    JsonValue first = *config;
    JsonValue list = JsonValue::Object();
    list.Set("cniVersion", JsonValue::String(config->StringAt("cniVersion")));
    list.Set("name", JsonValue::String(config->StringAt("name")));
    list.Set("plugins", JsonValue::Array({std::move(first), std::move(entry)}));
    return SerializeJson(list, 2) + "\n";
  }
  if (!plugins->is_array()) return absl::InvalidArgumentError("\"plugins\" is not a list");
  std::string out(text);
  if (CutOurEntries(out, *plugins)) {
    config = ParseConfig(out);
    if (!config.ok()) return config.status();
    plugins = config->Find("plugins");
  }
  const std::vector<JsonValue>& items = plugins->items();
  const std::string rendered = SerializeJson(entry);
  if (items.empty()) {
    out.insert(plugins->source_offset() + 1, rendered);
  } else {
    out.insert(items.back().source_offset() + items.back().source_length(),
               absl::StrCat(",\n    ", rendered));
  }
  return out;
}

absl::StatusOr<std::optional<std::string>> RemovePlugin(absl::string_view text) {
  absl::StatusOr<JsonValue> config = ParseConfig(text);
  if (!config.ok()) return config.status();
  const JsonValue* plugins = config->Find("plugins");
  if (plugins == nullptr || !plugins->is_array()) return std::optional<std::string>();
  std::string out(text);
  if (!CutOurEntries(out, *plugins)) return std::optional<std::string>();
  return std::optional<std::string>(std::move(out));
}

absl::Status WriteFileAtomically(const std::string& path, absl::string_view contents, int mode) {
  const std::string temporary = absl::StrCat(path, ".nodeward-tmp");
  const int fd = open(temporary.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode);
  if (fd < 0) return absl::ErrnoToStatus(errno, absl::StrCat("create ", temporary));
  fchmod(fd, static_cast<mode_t>(mode));
  absl::string_view left = contents;
  while (!left.empty()) {
    const ssize_t written = write(fd, left.data(), left.size());
    if (written < 0 && errno == EINTR) continue;
    if (written <= 0) {
      const int error = errno;
      close(fd);
      unlink(temporary.c_str());
      return absl::ErrnoToStatus(error, absl::StrCat("write ", temporary));
    }
    left.remove_prefix(static_cast<std::size_t>(written));
  }
  if (fsync(fd) != 0 || close(fd) != 0) {
    unlink(temporary.c_str());
    return absl::ErrnoToStatus(errno, absl::StrCat("write ", temporary));
  }
  if (rename(temporary.c_str(), path.c_str()) != 0) {
    const int error = errno;
    unlink(temporary.c_str());
    return absl::ErrnoToStatus(error, absl::StrCat("rename to ", path));
  }
  return absl::OkStatus();
}

absl::Status Install(const InstallOptions& options) {
  absl::StatusOr<std::string> binary = ReadFile(options.binary);
  if (!binary.ok()) return binary.status();
  const std::string target = absl::StrCat(options.bin_dir, "/", kPluginType);
  absl::StatusOr<std::string> installed = ReadFile(target);
  if (!installed.ok() || *installed != *binary) {
    if (absl::Status status = WriteFileAtomically(target, *binary, 0755); !status.ok()) {
      return status;
    }
  }
  // An entry already there is replaced: a new version's flags take effect.
  return EnsureEntry(options.net_dir, options.entry, EntryUpdate::kReplace).status();
}

namespace {

struct PrimaryConfig {
  std::string path;
  std::string text;
  JsonValue parsed;
};

absl::StatusOr<PrimaryConfig> ReadPrimaryConfig(const std::string& net_dir) {
  PrimaryConfig config;
  absl::StatusOr<std::string> path = FindPrimaryConfig(net_dir);
  if (!path.ok()) return path.status();
  config.path = *std::move(path);
  absl::StatusOr<std::string> text = ReadFile(config.path);
  if (!text.ok()) return text.status();
  config.text = *std::move(text);
  absl::StatusOr<JsonValue> parsed = ParseConfig(config.text);
  if (!parsed.ok()) {
    return absl::InvalidArgumentError(absl::StrCat(config.path, ": ", parsed.status().message()));
  }
  config.parsed = *std::move(parsed);
  return config;
}

const JsonValue* OurEntry(const JsonValue& config) {
  const JsonValue* plugins = config.Find("plugins");
  if (plugins == nullptr || !plugins->is_array()) return nullptr;
  for (const JsonValue& plugin : plugins->items()) {
    if (IsOurs(plugin)) return &plugin;
  }
  return nullptr;
}

}  // namespace

absl::StatusOr<std::optional<JsonValue>> FindEntry(const std::string& net_dir) {
  absl::StatusOr<PrimaryConfig> config = ReadPrimaryConfig(net_dir);
  if (!config.ok()) return config.status();
  const JsonValue* entry = OurEntry(config->parsed);
  return entry == nullptr ? std::optional<JsonValue>() : std::optional<JsonValue>(*entry);
}

absl::StatusOr<bool> EnsureEntry(const std::string& net_dir, const JsonValue& entry,
                                 EntryUpdate update) {
  absl::StatusOr<PrimaryConfig> config = ReadPrimaryConfig(net_dir);
  if (!config.ok()) return config.status();
  if (update == EntryUpdate::kOnlyIfMissing && OurEntry(config->parsed) != nullptr) return false;
  absl::StatusOr<std::string> updated = InsertPlugin(config->text, entry);
  if (!updated.ok()) {
    return absl::Status(updated.status().code(),
                        absl::StrCat(config->path, ": ", updated.status().message()));
  }
  if (*updated == config->text) return false;
  // Only a single-plugin file lacks "plugins": it becomes a .conflist of the same name.
  std::string path = config->path;
  if (config->parsed.Find("plugins") == nullptr) {
    path = absl::StrCat(path.substr(0, path.rfind('.')), ".conflist");
  }
  if (absl::Status status = WriteFileAtomically(path, *updated, 0644); !status.ok()) return status;
  if (path != config->path && unlink(config->path.c_str()) != 0) {
    return absl::ErrnoToStatus(errno, absl::StrCat("remove ", config->path, " (now ", path, ")"));
  }
  return true;
}

absl::Status Uninstall(const std::string& net_dir, const std::string& bin_dir) {
  absl::Status result;
  absl::StatusOr<std::vector<std::string>> names = ConfigFiles(net_dir);
  if (!names.ok()) {
    result = names.status();
  } else {
    for (const std::string& name : *names) {
      const std::string path = absl::StrCat(net_dir, "/", name);
      absl::StatusOr<std::string> text = ReadFile(path);
      if (!text.ok()) continue;
      absl::StatusOr<std::optional<std::string>> updated = RemovePlugin(*text);
      if (!updated.ok() || !updated->has_value()) continue;  // not ours to judge or no entry
      if (absl::Status status = WriteFileAtomically(path, **updated, 0644); !status.ok()) {
        result.Update(status);
      }
    }
  }
  const std::string binary = absl::StrCat(bin_dir, "/", kPluginType);
  if (unlink(binary.c_str()) != 0 && errno != ENOENT) {
    result.Update(absl::ErrnoToStatus(errno, absl::StrCat("remove ", binary)));
  }
  return result;
}

}  // namespace nodeward::cni
