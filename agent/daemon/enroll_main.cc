// nodeward-enroll: a small client of the agent's enrollment API, for scripts and tests.
//   nodeward-enroll [--socket=...] enroll --netns=PATH --uid=UID [--namespace=..] [--name=..]
//                   [--service_account=..] [--ips=a,b] [--labels=k=v,k2=v2]
//   nodeward-enroll [--socket=...] unenroll --uid=UID
//   nodeward-enroll [--socket=...] list
#include <iostream>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/time/time.h"
#include "agent/capture/enrollment.grpc.pb.h"
#include "common/dashed_flags.h"
#include "grpcpp/grpcpp.h"

ABSL_FLAG(std::string, socket, "/var/run/nodeward/enroll.sock", "the agent's enrollment socket");
ABSL_FLAG(std::string, netns, "", "enroll: path of the pod's network namespace");
ABSL_FLAG(std::string, uid, "", "pod uid");
ABSL_FLAG(std::string, namespace, "default", "enroll: pod namespace");
ABSL_FLAG(std::string, name, "", "enroll: pod name (default: the uid)");
ABSL_FLAG(std::string, service_account, "default", "enroll: pod service account");
ABSL_FLAG(std::vector<std::string>, ips, {}, "enroll: pod addresses (default: discovered)");
ABSL_FLAG(std::vector<std::string>, labels, {}, "enroll: pod labels as key=value");
ABSL_FLAG(int, timeout_seconds, 10, "deadline of the call");

namespace {

using nodeward::capture::v1::Enrollment;

void Print(const nodeward::capture::v1::EnrolledPod& pod) {
  std::cout << pod.pod().namespace_() << "/" << pod.pod().name() << " uid=" << pod.pod().uid()
            << " sa=" << pod.pod().service_account() << " netns=" << pod.pod().netns_path()
            << " netns_cookie=" << pod.netns_cookie()
            << " addresses=" << absl::StrJoin(pod.addresses(), ",")
            << " listeners=" << absl::StrJoin(pod.listeners(), ",") << "\n";
}

int Fail(const grpc::Status& status) {
  std::cerr << "nodeward-enroll: " << status.error_message() << " (code " << status.error_code()
            << ")\n";
  return 1;
}

}  // namespace

int main(int argc, char** argv) {
  absl::SetProgramUsageMessage("nodeward-enroll [flags] enroll|unenroll|list");
  std::vector<std::string> arguments;
  std::vector<char*> normalized = nodeward::DashedFlagsToUnderscores(argc, argv, arguments);
  std::vector<char*> positional =
      absl::ParseCommandLine(static_cast<int>(normalized.size()), normalized.data());
  if (positional.size() != 2) {
    std::cerr << "usage: nodeward-enroll [flags] enroll|unenroll|list\n";
    return 2;
  }
  const std::string command = positional[1];
  auto channel = grpc::CreateChannel(absl::StrCat("unix:", absl::GetFlag(FLAGS_socket)),
                                     grpc::InsecureChannelCredentials());
  std::unique_ptr<Enrollment::Stub> stub = Enrollment::NewStub(channel);
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() +
                       std::chrono::seconds(absl::GetFlag(FLAGS_timeout_seconds)));

  if (command == "enroll") {
    nodeward::capture::v1::EnrollRequest request;
    request.set_netns_path(absl::GetFlag(FLAGS_netns));
    request.set_uid(absl::GetFlag(FLAGS_uid));
    request.set_namespace_(absl::GetFlag(FLAGS_namespace));
    request.set_name(absl::GetFlag(FLAGS_name));
    request.set_service_account(absl::GetFlag(FLAGS_service_account));
    for (const std::string& ip : absl::GetFlag(FLAGS_ips)) request.add_ips(ip);
    for (const std::string& label : absl::GetFlag(FLAGS_labels)) {
      std::pair<std::string, std::string> kv = absl::StrSplit(label, absl::MaxSplits('=', 1));
      if (kv.first.empty()) {
        std::cerr << "nodeward-enroll: label \"" << label << "\" is not key=value\n";
        return 2;
      }
      (*request.mutable_labels())[kv.first] = kv.second;
    }
    nodeward::capture::v1::EnrollResponse response;
    grpc::Status status = stub->Enroll(&context, request, &response);
    if (!status.ok()) return Fail(status);
    Print(response.pod());
    return 0;
  }
  if (command == "unenroll") {
    nodeward::capture::v1::UnenrollRequest request;
    request.set_uid(absl::GetFlag(FLAGS_uid));
    nodeward::capture::v1::UnenrollResponse response;
    grpc::Status status = stub->Unenroll(&context, request, &response);
    if (!status.ok()) return Fail(status);
    return 0;
  }
  if (command == "list") {
    nodeward::capture::v1::ListResponse response;
    grpc::Status status = stub->List(&context, {}, &response);
    if (!status.ok()) return Fail(status);
    for (const auto& pod : response.pods()) Print(pod);
    return 0;
  }
  std::cerr << "nodeward-enroll: unknown command \"" << command << "\"\n";
  return 2;
}
