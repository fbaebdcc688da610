// SPDX-License-Identifier: BSD-3-Clause
#ifndef PSFMATCH_PARALLEL_H
#define PSFMATCH_PARALLEL_H

#include <functional>

namespace psfmatch {

/// The number of threads to use: n if n > 0, else the hardware concurrency (at least 1).
int resolveThreadCount(int n);

/// Calls fn(begin, end) on contiguous chunks covering [0, n), from up to nThreads threads.
///
/// Each index is handled by exactly one call and the work inside a chunk is independent of how
/// [0, n) was split, so results never depend on the thread count. The first exception thrown
/// by any chunk is rethrown here after all threads have finished.
void parallelFor(long n, int nThreads, const std::function<void(long, long)>& fn);

}  // namespace psfmatch

#endif
