// Everything nodeward-sds and the agent parse from outside: DiscoveryRequest/Response bytes
// and the Secrets inside, the allow-list file, the CA tokens file, TokenReview answers and
// the cgroups of callers. None may crash.
#include <cstddef>
#include <cstdint>
#include <string>

#include "envoy/service/discovery/v3/discovery.pb.h"
#include "sds/authorizer.h"
#include "sds/ca_service.h"
#include "sds/caller.h"
#include "sds/secret_resources.h"
#include "sds/token_review.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string input(reinterpret_cast<const char*>(data), size);

  envoy::service::discovery::v3::DiscoveryResponse response;
  if (response.ParseFromString(input)) {
    for (const google::protobuf::Any& resource : response.resources()) {
      (void)nodeward::sds::UnpackSecret(resource);
    }
  }
  envoy::service::discovery::v3::DiscoveryRequest request;
  if (request.ParseFromString(input)) {
    for (const std::string& name : request.resource_names()) {
      (void)nodeward::sds::ParseResourceName(name);
    }
  }
  google::protobuf::Any any;
  any.set_type_url(std::string(nodeward::sds::kSecretTypeUrl));
  any.set_value(input);
  (void)nodeward::sds::UnpackSecret(any);

  (void)nodeward::sds::ParseIdentityList(input);
  (void)nodeward::sds::ParseCaTokens(input);
  (void)nodeward::sds::ParseTokenReview(input, {"istio-ca"});
  (void)nodeward::sds::PodUidFromCgroups(input);
  (void)nodeward::sds::Echo(input);
  return 0;
}
