// A multi-node cluster on one machine: a network namespace per node and per pod, joined by veth
// pairs and a bridge, a cgroup per node holding only that node's pod processes, and per node a
// real nodeward-sds and nodeward-agent. Everything is recorded under
// /run/nodeward-sandbox/NAME/ as it is created and named with the sandbox's prefix, so `down`
// removes it all, also after a crash.
#pragma once

#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/time/time.h"

namespace nodeward::sandbox {

struct UpOptions {
  std::string file;     // the sandbox YAML
  std::string bin_dir;  // nodeward-agent, nodeward-sds, nodeward-enroll
  std::string self;     // this binary, started as the pods' application
  std::string name;     // replaces the file's sandbox name when not empty
  bool keep_on_failure = false;
  absl::Duration ready_timeout = absl::Seconds(30);
};

// Builds the cluster; returns once every agent serves its enrollment API and every pod of an
// enrolled namespace is enrolled. On failure everything created is removed again, unless
// keep_on_failure.
absl::Status Up(const UpOptions& options);

// Removes everything of sandbox `name`; fine when nothing (or only part) exists.
absl::Status Down(const std::string& name);

// Kills NODE's agent with SIGKILL (its pinned BPF state stays, so the node's enrolled pods fail
// closed meanwhile), waits `down_for`, starts it again with the same flags and returns once it
// serves its enrollment API again.
absl::Status RestartAgent(const std::string& name, const std::string& node, absl::Duration down_for,
                          absl::Duration ready_timeout);

// Prints nodes, pods and processes.
absl::Status PrintStatus(const std::string& name);

// Replaces this process with `argv` inside `pod`'s network namespace and its node's cgroup.
// `pod` is "name" or "namespace/name". Returns only on failure.
absl::Status ExecInPod(const std::string& name, const std::string& pod,
                       const std::vector<std::string>& argv);

}  // namespace nodeward::sandbox
