/* Prints CLOCK_MONOTONIC in nanoseconds: the "critical section" the shell contenders of the
 * wake-up benchmark run under the lock (bench/report.sh). Tiny and without libraries so
 * its own start-up adds as little as possible, the same for every contender. */
#define _POSIX_C_SOURCE 199309L
#include <stdio.h>
#include <time.h>

int main(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    printf("%lld\n", (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec);
    return 0;
}
