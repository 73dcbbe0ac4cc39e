#include "agent/capture/enrollment_service.h"

#include <string>

#include "common/log.h"

namespace nodeward::capture {

grpc::Status ToGrpcStatus(const absl::Status& status) {
  if (status.ok()) return grpc::Status::OK;
  // absl and gRPC share the canonical code numbering.
  return grpc::Status(static_cast<grpc::StatusCode>(status.code()), std::string(status.message()));
}

grpc::Status EnrollmentService::Enroll(grpc::ServerContext* context,
                                       const v1::EnrollRequest* request,
                                       v1::EnrollResponse* response) {
  absl::StatusOr<v1::EnrolledPod> enrolled = manager_->Enroll(*request);
  if (!enrolled.ok()) {
    Log(LogLevel::kWarning, "enroll pod=", request->namespace_(), "/", request->name(),
        " uid=", request->uid(), " refused reason=", enrolled.status().ToString());
    return ToGrpcStatus(enrolled.status());
  }
  *response->mutable_pod() = *std::move(enrolled);
  return grpc::Status::OK;
}

grpc::Status EnrollmentService::Unenroll(grpc::ServerContext* context,
                                         const v1::UnenrollRequest* request,
                                         v1::UnenrollResponse* response) {
  return ToGrpcStatus(manager_->Unenroll(request->uid()));
}

grpc::Status EnrollmentService::List(grpc::ServerContext* context, const v1::ListRequest* request,
                                     v1::ListResponse* response) {
  for (v1::EnrolledPod& pod : manager_->List()) *response->add_pods() = std::move(pod);
  return grpc::Status::OK;
}

}  // namespace nodeward::capture
