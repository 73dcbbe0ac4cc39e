#include "policy/peer_authentication.h"

#include <string>
#include <vector>

#include "absl/strings/str_cat.h"

namespace nodeward::policy {
namespace {

// Notes the policies that lost to the first one of a level, and why it won: Istio picks the
// oldest, and among policies of the same age the first by name. Undated ones (hand-written
// files) count as the newest (see ObjectMeta::creation_timestamp), and the trace says so.
void NoteIgnored(const std::vector<const PeerAuthentication*>& candidates, absl::string_view level,
                 Trace& trace) {
  for (size_t i = 1; i < candidates.size(); ++i) {
    const PeerAuthentication& winner = *candidates[0];
    const PeerAuthentication& loser = *candidates[i];
    std::string why;
    if (loser.meta.creation_timestamp == absl::InfiniteFuture() &&
        winner.meta.creation_timestamp != absl::InfiniteFuture()) {
      why = absl::StrCat("the older ", Describe(winner), " (", Describe(loser),
                         " has no creationTimestamp, so it counts as created after every dated "
                         "policy, as the API server would date it)");
    } else if (winner.meta.creation_timestamp != loser.meta.creation_timestamp) {
      why = absl::StrCat("the older ", Describe(winner));
    } else if (winner.meta.creation_timestamp == absl::InfiniteFuture()) {
      why =
          absl::StrCat(Describe(winner), " (neither has a creationTimestamp, so the name decides)");
    } else {
      why = absl::StrCat(Describe(winner), " (created in the same second, so the name decides)");
    }
    trace.warnings.push_back(
        absl::StrCat(Describe(loser), " is ignored: ", level, " already has ", why));
  }
}

void NotePortLevelWithoutSelector(const PeerAuthentication& policy, Trace& trace) {
  if (!policy.port_level.empty()) {
    trace.warnings.push_back(absl::StrCat(Describe(policy),
                                          ": portLevelMtls is ignored because the policy has no "
                                          "selector (port-level modes need a workload selector)"));
  }
}

}  // namespace

EffectiveMtls ResolveMtlsMode(const Snapshot& snapshot, const Pod& workload, uint32_t port) {
  EffectiveMtls result;
  Trace& trace = result.trace;
  const PeerAuthentication* mesh = nullptr;
  const PeerAuthentication* ns = nullptr;
  const PeerAuthentication* selected = nullptr;

  const auto& mesh_policies = snapshot.MeshPeerAuthentications();
  if (mesh_policies.empty()) {
    trace.steps.push_back(
        absl::StrCat("mesh-wide: no PeerAuthentication without a selector in "
                     "the root namespace ",
                     snapshot.options().root_namespace));
  } else {
    mesh = mesh_policies.front();
    result.levels.mesh = mesh->mode;
    trace.steps.push_back(
        absl::StrCat("mesh-wide: ", Describe(*mesh), " sets ", MtlsModeName(mesh->mode)));
    NoteIgnored(mesh_policies, "the mesh level", trace);
    NotePortLevelWithoutSelector(*mesh, trace);
  }

  if (workload.meta.ns == snapshot.options().root_namespace) {
    trace.steps.push_back(absl::StrCat("namespace: ", workload.meta.ns,
                                       " is the root namespace, its policies are mesh-wide"));
  } else {
    const auto& ns_policies = snapshot.NamespacePeerAuthentications(workload.meta.ns);
    if (ns_policies.empty()) {
      trace.steps.push_back(absl::StrCat("namespace: no PeerAuthentication without a selector in ",
                                         workload.meta.ns));
    } else {
      ns = ns_policies.front();
      result.levels.namespace_level = ns->mode;
      trace.steps.push_back(
          absl::StrCat("namespace: ", Describe(*ns), " sets ", MtlsModeName(ns->mode)));
      NoteIgnored(ns_policies, absl::StrCat("namespace ", workload.meta.ns), trace);
      NotePortLevelWithoutSelector(*ns, trace);
    }
  }

  for (const PeerAuthentication* ignored :
       snapshot.IgnoredRootSelectorPeerAuthentications(workload)) {
    trace.warnings.push_back(
        absl::StrCat(Describe(*ignored),
                     " is ignored: a PeerAuthentication with a selector in the root "
                     "namespace ",
                     snapshot.options().root_namespace, " applies to no workload, as in Istio"));
  }
  std::vector<const PeerAuthentication*> workload_policies =
      snapshot.WorkloadPeerAuthentications(workload);
  if (workload_policies.empty()) {
    trace.steps.push_back(
        absl::StrCat("workload: no PeerAuthentication selects ", Describe(workload)));
  } else {
    selected = workload_policies.front();
    result.levels.workload = selected->mode;
    trace.steps.push_back(absl::StrCat("workload: ", Describe(*selected), " selects ",
                                       Describe(workload), " and sets ",
                                       MtlsModeName(selected->mode)));
    NoteIgnored(workload_policies, absl::StrCat("workload ", Describe(workload)), trace);
    auto entry = selected->port_level.find(port);
    if (entry != selected->port_level.end()) {
      result.levels.port = entry->second;
      trace.steps.push_back(absl::StrCat("port: ", Describe(*selected), " portLevelMtls[", port,
                                         "] sets ", MtlsModeName(entry->second)));
    } else if (!selected->port_level.empty()) {
      trace.steps.push_back(
          absl::StrCat("port: ", Describe(*selected), " has no portLevelMtls entry for ", port));
    }
  }

  // Most specific level that sets a mode wins; UNSET defers to the level above.
  struct Level {
    absl::string_view name;
    MtlsMode mode;
    const PeerAuthentication* policy;
  };
  const Level levels[] = {{"port", result.levels.port, selected},
                          {"workload", result.levels.workload, selected},
                          {"namespace", result.levels.namespace_level, ns},
                          {"mesh-wide", result.levels.mesh, mesh}};
  for (const Level& level : levels) {
    if (level.mode == MtlsMode::kUnset) continue;
    result.mode = level.mode;
    trace.deciding.push_back(Describe(*level.policy));
    trace.steps.push_back(absl::StrCat("effective mode on port ", port, ": ",
                                       MtlsModeName(level.mode), " (from the ", level.name,
                                       " level)"));
    return result;
  }
  result.mode = MtlsMode::kPermissive;
  trace.steps.push_back(absl::StrCat("effective mode on port ", port,
                                     ": PERMISSIVE (no level sets a mode, Istio's default)"));
  return result;
}

}  // namespace nodeward::policy
