// The agent's heap policy: large blocks mapped on their own, the worker threads' heaps kept
// grown while traffic flows and shrunk once a loop is idle.
#pragma once

#include <cstddef>

namespace nodeward::io {

// Fixed glibc thresholds for the whole process, set once at start. glibc otherwise raises its
// mmap and trim thresholds to the largest block freed so far, so one burst of multi-megabyte
// stream buffers leaves every worker heap grown, free and resident for good.
void ConfigureHeapThresholds();

// Gives back the free memory of the calling thread's heap and the free pages of every heap.
// glibc shrinks a thread's heap top only from free() and only above the trim threshold, which
// stays high while traffic flows (shrinking and refaulting buffers would cost the bulk path);
// this lowers it for one free on this thread's heap. Call from an idle loop thread.
void ReleaseFreeHeapMemory();

}  // namespace nodeward::io
