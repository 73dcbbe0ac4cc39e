// Small file-system helpers the binaries share: whole-file reads of configuration, keys and
// tokens, private state directories and the parents of sockets and state files.
#pragma once

#include <sys/stat.h>

#include <cerrno>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/string_view.h"

namespace nodeward {

inline absl::StatusOr<std::string> ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat("cannot read ", path));
  std::ostringstream contents;
  contents << in.rdbuf();
  return contents.str();
}

// ReadFile, with the error naming what the file is for ("privateKey: cannot read /etc/k.pem").
inline absl::StatusOr<std::string> ReadFileFor(absl::string_view what, const std::string& path) {
  absl::StatusOr<std::string> contents = ReadFile(path);
  if (!contents.ok()) {
    return absl::Status(contents.status().code(),
                        absl::StrCat(what, ": ", contents.status().message()));
  }
  return contents;
}

// Creates `path` and its missing parents with mode 0700: state only the node's own processes
// may read.
inline absl::Status MakePrivateDirectories(const std::string& path) {
  std::string prefix;
  for (absl::string_view part : absl::StrSplit(path, '/', absl::SkipEmpty())) {
    absl::StrAppend(&prefix, "/", part);
    if (mkdir(prefix.c_str(), 0700) != 0 && errno != EEXIST) {
      return absl::ErrnoToStatus(errno, absl::StrCat("mkdir ", prefix));
    }
  }
  return absl::OkStatus();
}

// Creates the missing directories above `path` (not `path` itself) with `mode`: where a socket
// or a state file is about to be created.
inline absl::Status MakeParentDirectories(const std::string& path, mode_t mode) {
  std::string prefix;
  std::vector<std::string> parts = absl::StrSplit(path, '/', absl::SkipEmpty());
  if (!parts.empty()) parts.pop_back();
  for (const std::string& part : parts) {
    absl::StrAppend(&prefix, "/", part);
    if (mkdir(prefix.c_str(), mode) != 0 && errno != EEXIST) {
      return absl::ErrnoToStatus(errno, absl::StrCat("mkdir ", prefix));
    }
  }
  return absl::OkStatus();
}

}  // namespace nodeward
