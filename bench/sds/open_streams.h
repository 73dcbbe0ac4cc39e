// What open SDS streams cost the nodeward-sds process: its threads and resident memory with
// one stream (the baseline, in the same run), with `streams` streams each holding ROOTCA and a
// workload certificate, and once they have closed.
#pragma once

#include <string>

namespace nodeward::sds {

// `binary` is nodeward-sds; `dir` a scratch directory. Prints one table; false on failure.
bool MeasureOpenStreams(const std::string& binary, const std::string& dir, int streams,
                        int connections);

}  // namespace nodeward::sds
