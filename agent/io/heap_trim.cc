#include "agent/io/heap_trim.h"

#include <malloc.h>

#include <cstdlib>

namespace nodeward::io {
namespace {

// Blocks this large and larger are mapped on their own and unmapped when freed; the data
// path's blocks (64 KiB receive chunks, sealed TLS records up to a few hundred KiB) stay below.
constexpr int kMmapThreshold = 1 << 20;
// While traffic flows a heap keeps up to this much free top, so buffers are not unmapped and
// faulted in again between bursts.
constexpr int kBusyTrimThreshold = 32 << 20;
// When idle, a heap keeps no more free top than this.
constexpr int kIdleTrimThreshold = 128 << 10;
// Past the thread cache and fast bins (so free() reaches the heap top) and below the mmap
// threshold (so it comes from this thread's heap).
constexpr std::size_t kProbeBytes = 256 << 10;

}  // namespace

void ConfigureHeapThresholds() {
  mallopt(M_MMAP_THRESHOLD, kMmapThreshold);
  mallopt(M_TRIM_THRESHOLD, kBusyTrimThreshold);
}

void ReleaseFreeHeapMemory() {
  mallopt(M_TRIM_THRESHOLD, kIdleTrimThreshold);
  void* probe = std::malloc(kProbeBytes);
  // A store the compiler must keep, or it may drop the malloc/free pair altogether.
  if (probe != nullptr) static_cast<volatile char*>(probe)[0] = 0;
  std::free(probe);
  malloc_trim(0);
  mallopt(M_TRIM_THRESHOLD, kBusyTrimThreshold);
}

}  // namespace nodeward::io
