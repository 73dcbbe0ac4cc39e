// Kubernetes-native callers of the CA service, as istiod authenticates them: the caller's
// projected service-account token (a JWT) is checked with the TokenReview API, and the
// certificate is for spiffe://<trust-domain>/ns/<namespace>/sa/<service-account> of that
// token, whatever else the CSR asks for.
#pragma once

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "policy/kube_source.h"
#include "sds/ca_service.h"

namespace nodeward::sds {

struct ServiceAccountRef {
  std::string ns;
  std::string name;
};

// The JSON body of a TokenReview creation for `token`, valid for any of `audiences`.
std::string TokenReviewRequest(absl::string_view token, const std::vector<std::string>& audiences);

// The service account a TokenReview answer authenticates. Unauthenticated when the API server
// did not authenticate the token, when it is not a service account's, or when none of
// `audiences` is among those the server says the token is valid for; InvalidArgument when the
// answer is not a TokenReview.
absl::StatusOr<ServiceAccountRef> ParseTokenReview(absl::string_view json,
                                                   const std::vector<std::string>& audiences);

struct TokenReviewOptions {
  // The API server, and the CA's own token to call it with (which needs the
  // system:auth-delegator cluster role, or create on tokenreviews).
  policy::KubeSourceOptions api;
  // istiod's default: tokens projected for the audience istio-ca.
  std::vector<std::string> audiences = {"istio-ca"};
  std::string trust_domain = "cluster.local";
};

class TokenReviewAuthenticator : public CaAuthenticator {
 public:
  explicit TokenReviewAuthenticator(TokenReviewOptions options) : options_(std::move(options)) {}

  // Any token may be a JWT: every one the static tokens did not know is reviewed. Unavailable
  // when the API server cannot be asked (the caller should retry).
  absl::StatusOr<CaCaller> Authenticate(absl::string_view token) override;

 private:
  const TokenReviewOptions options_;
};

}  // namespace nodeward::sds
