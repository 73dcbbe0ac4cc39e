#include "agent/cni/state_files.h"

#include <dirent.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "agent/cni/conflist.h"
#include "common/files.h"
#include "common/json.h"

namespace nodeward::cni {
namespace {

constexpr char kRecordSuffix[] = ".json";
// Records are a few hundred bytes: a bigger file is not one of ours.
constexpr std::size_t kMaxRecord = 64 * 1024;

std::string RecordPath(const std::string& dir, const std::string& container_id) {
  return absl::StrCat(dir, "/", container_id, kRecordSuffix);
}

}  // namespace

std::string PodRecordJson(const PodRecord& record) {
  std::vector<JsonValue> ips;
  for (const std::string& ip : record.ips) ips.push_back(JsonValue::String(ip));
  return SerializeJson(JsonValue::Object({
             {"containerId", JsonValue::String(record.container_id)},
             {"netns", JsonValue::String(record.netns)},
             {"namespace", JsonValue::String(record.namespace_name)},
             {"name", JsonValue::String(record.name)},
             {"uid", JsonValue::String(record.uid)},
             {"ifname", JsonValue::String(record.ifname)},
             {"ips", JsonValue::Array(std::move(ips))},
             {"addedUnixMs", JsonValue::Number(absl::StrCat(record.added_unix_ms))},
         })) +
         "\n";
}

absl::StatusOr<PodRecord> ParsePodRecord(absl::string_view text) {
  if (text.size() > kMaxRecord) return absl::InvalidArgumentError("pod record over 64 KiB");
  absl::StatusOr<JsonValue> parsed = ParseJson(text);
  if (!parsed.ok()) return parsed.status();
  if (!parsed->is_object()) return absl::InvalidArgumentError("pod record is not an object");
  PodRecord record;
  record.container_id = parsed->StringAt("containerId");
  record.netns = parsed->StringAt("netns");
  record.namespace_name = parsed->StringAt("namespace");
  record.name = parsed->StringAt("name");
  record.uid = parsed->StringAt("uid");
  record.ifname = parsed->StringAt("ifname");
  if (record.container_id.empty() || record.netns.empty() || record.netns.front() != '/') {
    return absl::InvalidArgumentError("pod record needs a containerId and an absolute netns");
  }
  if (const JsonValue* ips = parsed->Find("ips"); ips != nullptr && ips->is_array()) {
    for (const JsonValue& ip : ips->items()) {
      if (!ip.is_string()) return absl::InvalidArgumentError("pod record ips must be strings");
      record.ips.push_back(ip.text());
    }
  }
  if (const JsonValue* added = parsed->Find("addedUnixMs"); added != nullptr) {
    if (added->type() != JsonValue::Type::kNumber ||
        !absl::SimpleAtoi(added->text(), &record.added_unix_ms)) {
      return absl::InvalidArgumentError("pod record addedUnixMs is not an integer");
    }
  }
  return record;
}

absl::Status WritePodRecord(const std::string& dir, const PodRecord& record) {
  // 0755: the plugin writes as root on the host, the agent reads from its container.
  if (absl::Status status = MakeParentDirectories(RecordPath(dir, record.container_id), 0755);
      !status.ok()) {
    return status;
  }
  return WriteFileAtomically(RecordPath(dir, record.container_id), PodRecordJson(record), 0600);
}

absl::Status RemovePodRecord(const std::string& dir, const std::string& container_id) {
  const std::string path = RecordPath(dir, container_id);
  if (unlink(path.c_str()) != 0 && errno != ENOENT) {
    return absl::ErrnoToStatus(errno, absl::StrCat("remove ", path));
  }
  return absl::OkStatus();
}

absl::StatusOr<PodRecord> ReadPodRecord(const std::string& dir, const std::string& container_id) {
  const std::string path = RecordPath(dir, container_id);
  absl::StatusOr<std::string> text = ReadFile(path);
  if (!text.ok()) return text.status();
  absl::StatusOr<PodRecord> record = ParsePodRecord(*text);
  if (!record.ok()) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": ", record.status().message()));
  }
  return record;
}

PodRecords ReadPodRecords(const std::string& dir) {
  PodRecords result;
  DIR* handle = opendir(dir.c_str());
  if (handle == nullptr) return result;
  std::vector<std::string> ids;
  while (dirent* entry = readdir(handle)) {
    absl::string_view name = entry->d_name;
    if (name.front() == '.' || !absl::ConsumeSuffix(&name, kRecordSuffix)) continue;
    ids.emplace_back(name);
  }
  closedir(handle);
  for (const std::string& id : ids) {
    absl::StatusOr<PodRecord> record = ReadPodRecord(dir, id);
    if (record.ok()) {
      result.records.push_back(*std::move(record));
    } else {
      result.unreadable.push_back(std::string(record.status().message()));
    }
  }
  std::sort(
      result.records.begin(), result.records.end(),
      [](const PodRecord& a, const PodRecord& b) { return a.added_unix_ms < b.added_unix_ms; });
  return result;
}

std::string EnrolledNamespacesText(const std::set<std::string>& namespaces) {
  std::string text =
      "# Namespaces whose pods nodeward captures, as the agent last saw them. nodeward-cni\n"
      "# reads this while the agent cannot answer: pods of these namespaces wait.\n";
  for (const std::string& ns : namespaces) absl::StrAppend(&text, ns, "\n");
  return text;
}

absl::StatusOr<std::set<std::string>> ParseEnrolledNamespaces(absl::string_view text) {
  std::set<std::string> namespaces;
  int line_number = 0;
  for (absl::string_view line : absl::StrSplit(text, '\n')) {
    ++line_number;
    line = absl::StripAsciiWhitespace(line.substr(0, line.find('#')));
    if (line.empty()) continue;
    for (const char c : line) {
      if (!(absl::ascii_islower(c) || absl::ascii_isdigit(c) || c == '-')) {
        return absl::InvalidArgumentError(
            absl::StrCat("line ", line_number, ": \"", line, "\" is not a namespace name"));
      }
    }
    namespaces.emplace(line);
  }
  return namespaces;
}

absl::StatusOr<std::set<std::string>> ReadEnrolledNamespaces(const std::string& path) {
  absl::StatusOr<std::string> text = ReadFile(path);
  if (!text.ok()) return text.status();
  absl::StatusOr<std::set<std::string>> namespaces = ParseEnrolledNamespaces(*text);
  if (!namespaces.ok()) {
    return absl::DataLossError(absl::StrCat(path, ": ", namespaces.status().message()));
  }
  return namespaces;
}

absl::Status WriteEnrolledNamespaces(const std::string& path,
                                     const std::set<std::string>& namespaces) {
  if (absl::Status status = MakeParentDirectories(path, 0755); !status.ok()) return status;
  return WriteFileAtomically(path, EnrolledNamespacesText(namespaces), 0644);
}

}  // namespace nodeward::cni
