#pragma once

#include "absl/status/status.h"
#include "agent/capture/enrollment.grpc.pb.h"
#include "agent/capture/enrollment_manager.h"
#include "grpcpp/grpcpp.h"

namespace nodeward::capture {

// The gRPC face of the EnrollmentManager, served on the agent's enrollment Unix socket.
class EnrollmentService final : public v1::Enrollment::Service {
 public:
  explicit EnrollmentService(EnrollmentManager* manager) : manager_(manager) {}

  grpc::Status Enroll(grpc::ServerContext* context, const v1::EnrollRequest* request,
                      v1::EnrollResponse* response) override;
  grpc::Status Unenroll(grpc::ServerContext* context, const v1::UnenrollRequest* request,
                        v1::UnenrollResponse* response) override;
  grpc::Status List(grpc::ServerContext* context, const v1::ListRequest* request,
                    v1::ListResponse* response) override;

 private:
  EnrollmentManager* const manager_;
};

grpc::Status ToGrpcStatus(const absl::Status& status);

}  // namespace nodeward::capture
