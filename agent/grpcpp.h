// <grpcpp/grpcpp.h> for localvol code. Include it first: abseil defines the
// same lock-annotation macros as base/thread_annotations.h (with the same
// meaning); they are dropped here so that ours, included after, win. A file
// that included base/thread_annotations.h before this one loses them.
#pragma once

#include <grpcpp/grpcpp.h>
#undef GUARDED_BY
#undef PT_GUARDED_BY
#undef REQUIRES
#undef EXCLUDES
#undef ACQUIRED_BEFORE
#undef ACQUIRED_AFTER
#undef ACQUIRE
#undef RELEASE
#undef CAPABILITY
#undef SCOPED_CAPABILITY
#undef NO_THREAD_SAFETY_ANALYSIS
