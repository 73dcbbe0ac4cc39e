// Command lines of every nodeward binary: flags are documented with dashes (--attach-cgroup),
// abseil names them with underscores. Both spellings are accepted by rewriting the name part
// of each "--flag[=value]" argument before abseil parses them. Everything after a bare "--"
// (a command to run, say) is left as it is.
#pragma once

#include <string>
#include <vector>

namespace nodeward {

// `store` keeps the rewritten strings alive for as long as the returned pointers are used.
inline std::vector<char*> DashedFlagsToUnderscores(int argc, char** argv,
                                                   std::vector<std::string>& store) {
  store.assign(argv, argv + argc);
  std::vector<char*> result;
  bool options_ended = false;
  for (std::string& argument : store) {
    if (argument == "--") options_ended = true;
    if (!options_ended && argument.rfind("--", 0) == 0) {
      std::size_t end = argument.find('=');
      if (end == std::string::npos) end = argument.size();
      for (std::size_t i = 2; i < end; ++i) {
        if (argument[i] == '-') argument[i] = '_';
      }
    }
    result.push_back(argument.data());
  }
  return result;
}

}  // namespace nodeward
