// What nodeward-cni and the agent leave for each other on the node, so each can act while the
// other is absent:
//  - a pod record per sandbox, written by the plugin at ADD before it asks the agent (and
//    removed at DEL): the agent finds a pod's netns from it, at start and after a label change;
//  - the enrolled namespaces, written by the agent whenever they change (on persistent
//    storage): how the plugin decides while the agent cannot answer.
#pragma once

#include <cstdint>
#include <set>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace nodeward::cni {

struct PodRecord {
  std::string container_id;
  std::string netns;
  std::string namespace_name;
  std::string name;
  std::string uid;
  std::string ifname;
  std::vector<std::string> ips;
  int64_t added_unix_ms = 0;
};

std::string PodRecordJson(const PodRecord& record);
absl::StatusOr<PodRecord> ParsePodRecord(absl::string_view text);

// <dir>/<container id>.json, written atomically; `dir` is created (0700) when missing.
absl::Status WritePodRecord(const std::string& dir, const PodRecord& record);
// Idempotent.
absl::Status RemovePodRecord(const std::string& dir, const std::string& container_id);
absl::StatusOr<PodRecord> ReadPodRecord(const std::string& dir, const std::string& container_id);

struct PodRecords {
  std::vector<PodRecord> records;
  std::vector<std::string> unreadable;  // "file: why", for the log
};
// Every record of `dir`, oldest first; a missing directory holds none.
PodRecords ReadPodRecords(const std::string& dir);

// One namespace per line; '#' starts a comment.
std::string EnrolledNamespacesText(const std::set<std::string>& namespaces);
absl::StatusOr<std::set<std::string>> ParseEnrolledNamespaces(absl::string_view text);
// NotFound when the agent never wrote the file (it has not run on this node yet).
absl::StatusOr<std::set<std::string>> ReadEnrolledNamespaces(const std::string& path);
absl::Status WriteEnrolledNamespaces(const std::string& path,
                                     const std::set<std::string>& namespaces);

}  // namespace nodeward::cni
