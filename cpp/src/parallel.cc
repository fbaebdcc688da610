// SPDX-License-Identifier: BSD-3-Clause
#include "psfmatch/parallel.h"

#include <algorithm>
#include <exception>
#include <mutex>
#include <thread>
#include <vector>

namespace psfmatch {

int resolveThreadCount(int n) {
    if (n > 0) return n;
    unsigned hw = std::thread::hardware_concurrency();
    return hw == 0 ? 1 : static_cast<int>(hw);
}

void parallelFor(long n, int nThreads, const std::function<void(long, long)>& fn) {
    if (n <= 0) return;
    long nt = std::min<long>(resolveThreadCount(nThreads), n);
    if (nt <= 1) {
        fn(0, n);
        return;
    }
    // More chunks than threads balances uneven rows; each thread pulls the next chunk.
    long nChunks = std::min<long>(n, nt * 8);
    std::vector<std::thread> threads;
    std::exception_ptr error;
    std::mutex mutex;
    long next = 0;
    auto worker = [&]() {
        for (;;) {
            long c;
            {
                std::lock_guard<std::mutex> lock(mutex);
                if (next >= nChunks || error) return;
                c = next++;
            }
            long begin = n * c / nChunks;
            long end = n * (c + 1) / nChunks;
            try {
                fn(begin, end);
            } catch (...) {
                std::lock_guard<std::mutex> lock(mutex);
                if (!error) error = std::current_exception();
            }
        }
    };
    for (long t = 0; t < nt; ++t) threads.emplace_back(worker);
    for (auto& t : threads) t.join();
    if (error) std::rethrow_exception(error);
}

}  // namespace psfmatch
