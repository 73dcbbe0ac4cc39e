#include "sds/token_review.h"

#include <algorithm>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "google/protobuf/struct.pb.h"
#include "google/protobuf/util/json_util.h"
#include "sds/log.h"
#include "sds/secret_resources.h"
#include "yaml-cpp/yaml.h"

namespace nodeward::sds {
namespace {

constexpr char kTokenReviews[] = "/apis/authentication.k8s.io/v1/tokenreviews";
constexpr absl::string_view kServiceAccountPrefix = "system:serviceaccount:";
// A TokenReview answer is small; anything larger is not one.
constexpr std::size_t kMaxAnswerBytes = 256 * 1024;

// yaml-cpp throws on most questions about a key that is absent: ask whether it is there first.
YAML::Node Child(const YAML::Node& map, const char* key) {
  if (!map.IsDefined() || !map.IsMap()) return YAML::Node(YAML::NodeType::Undefined);
  YAML::Node child = map[key];
  return child.IsDefined() ? child : YAML::Node(YAML::NodeType::Undefined);
}

std::string ScalarOf(const YAML::Node& node) {
  return node.IsDefined() && node.IsScalar() ? node.as<std::string>() : "";
}

}  // namespace

std::string TokenReviewRequest(absl::string_view token, const std::vector<std::string>& audiences) {
  google::protobuf::Struct review;
  auto& fields = *review.mutable_fields();
  fields["apiVersion"].set_string_value("authentication.k8s.io/v1");
  fields["kind"].set_string_value("TokenReview");
  auto& spec = *fields["spec"].mutable_struct_value()->mutable_fields();
  spec["token"].set_string_value(std::string(token));
  auto* list = spec["audiences"].mutable_list_value();
  for (const std::string& audience : audiences) list->add_values()->set_string_value(audience);
  std::string json;
  // A Struct of strings always converts.
  (void)google::protobuf::util::MessageToJsonString(review, &json);
  return json;
}

absl::StatusOr<ServiceAccountRef> ParseTokenReview(absl::string_view json,
                                                   const std::vector<std::string>& audiences) {
  YAML::Node review;
  try {
    review = YAML::Load(std::string(json));
  } catch (const YAML::Exception& e) {
    return absl::InvalidArgumentError(absl::StrCat("TokenReview answer is not JSON: ", e.msg));
  }
  try {
    const YAML::Node status = Child(review, "status");
    if (!status.IsDefined() || !status.IsMap()) {
      return absl::InvalidArgumentError("TokenReview answer has no status");
    }
    const YAML::Node authenticated = Child(status, "authenticated");
    if (!authenticated.IsDefined() || !authenticated.as<bool>()) {
      const std::string reason = ScalarOf(Child(status, "error"));
      return absl::UnauthenticatedError(
          absl::StrCat("the API server did not authenticate the token", reason.empty() ? "" : ": ",
                       Echo(reason)));
    }
    const std::string username = ScalarOf(Child(Child(status, "user"), "username"));
    absl::string_view rest = username;
    if (!absl::ConsumePrefix(&rest, kServiceAccountPrefix)) {
      return absl::UnauthenticatedError(
          absl::StrCat("the token is not a service account's (user \"", Echo(username), "\")"));
    }
    std::vector<std::string> parts = absl::StrSplit(rest, ':');
    if (parts.size() != 2 || parts[0].empty() || parts[1].empty()) {
      return absl::UnauthenticatedError(
          absl::StrCat("the token's user \"", Echo(username), "\" names no service account"));
    }
    // An API server that ignores audiences answers without them: such a token may have been
    // meant for anyone, so it is refused, as the TokenReview API asks of its clients.
    bool audience_matched = audiences.empty();
    if (const YAML::Node granted = Child(status, "audiences");
        granted.IsDefined() && granted.IsSequence()) {
      for (const YAML::Node& audience : granted) {
        if (audience.IsScalar() && std::find(audiences.begin(), audiences.end(),
                                             audience.as<std::string>()) != audiences.end()) {
          audience_matched = true;
        }
      }
    }
    if (!audience_matched) {
      return absl::UnauthenticatedError(
          "the token is not valid for the CA's audience (istiod's is istio-ca)");
    }
    return ServiceAccountRef{std::move(parts[0]), std::move(parts[1])};
  } catch (const YAML::Exception& e) {
    return absl::InvalidArgumentError(absl::StrCat("TokenReview answer is malformed: ", e.msg));
  }
}

absl::StatusOr<CaCaller> TokenReviewAuthenticator::Authenticate(absl::string_view token) {
  absl::StatusOr<policy::KubeResponse> answer =
      policy::KubeRequest(options_.api, "POST", kTokenReviews,
                          TokenReviewRequest(token, options_.audiences), kMaxAnswerBytes);
  if (!answer.ok()) {
    return absl::UnavailableError(
        absl::StrCat("TokenReview could not be asked: ", answer.status().message()));
  }
  if (answer->status != 200 && answer->status != 201) {
    // 401/403: the CA's own token or role is wrong, which no retry of the caller mends soon
    // but which an operator fixes: said as unavailable, with the API server's answer.
    return absl::UnavailableError(
        absl::StrCat("TokenReview answered HTTP ", answer->status, ": ", Echo(answer->body)));
  }
  absl::StatusOr<ServiceAccountRef> account = ParseTokenReview(answer->body, options_.audiences);
  if (!account.ok()) {
    if (account.status().code() == absl::StatusCode::kInvalidArgument) {
      return absl::UnavailableError(account.status().message());
    }
    return account.status();
  }
  absl::StatusOr<SpiffeId> identity =
      SpiffeId::Make(options_.trust_domain, account->ns, account->name);
  if (!identity.ok()) {
    return absl::UnauthenticatedError(
        absl::StrCat("service account ", Echo(account->ns), "/", Echo(account->name),
                     " makes no SPIFFE ID: ", identity.status().message()));
  }
  CaCaller caller;
  caller.workload = *std::move(identity);
  return caller;
}

}  // namespace nodeward::sds
