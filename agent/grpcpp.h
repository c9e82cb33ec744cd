// <grpcpp/grpcpp.h> for files that also use base/thread_annotations.h.
// abseil, which gRPC includes, defines the same lock-annotation macros (with
// the same meaning); they are dropped here so that ours win. Include this
// before any localvol header. Header only.
#pragma once

#include <grpcpp/grpcpp.h>
#undef GUARDED_BY
#undef PT_GUARDED_BY
#undef REQUIRES
#undef EXCLUDES
#undef ACQUIRE
#undef RELEASE
#undef CAPABILITY
#undef SCOPED_CAPABILITY
#undef NO_THREAD_SAFETY_ANALYSIS
