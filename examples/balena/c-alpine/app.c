/* A worker that holds the update lock only around each unit of work that must not be cut
 * short, and lets updates through in between. Environment: WORK_SECONDS (2) for each unit,
 * INTERVAL_SECONDS (10) between units. SIGTERM (an update, `docker stop`) lets the unit in
 * progress finish, then exits 0. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "update_lock.h"

static volatile sig_atomic_t stop;

static void on_sigterm(int sig) { (void)sig; stop = 1; }

static unsigned seconds_from_env(const char *name, unsigned fallback) {
    const char *v = getenv(name);
    return v && *v ? (unsigned)strtoul(v, NULL, 10) : fallback;
}

int main(void) {
    unsigned work = seconds_from_env("WORK_SECONDS", 2);
    unsigned interval = seconds_from_env("INTERVAL_SECONDS", 10);
    struct sigaction sa = { .sa_handler = on_sigterm };
    sigaction(SIGTERM, &sa, NULL);
    setvbuf(stdout, NULL, _IOLBF, 0);

    while (!stop) {
        ul_options opts;
        ul_lock *lock = NULL;
        ul_options_init(&opts, sizeof opts);
        opts.timeout_ms = 60000;
        if (ul_acquire(&opts, &lock) == UL_OK) {
            printf("holding the update lock:");
            for (size_t i = 0; i < ul_lock_path_count(lock); i++) printf(" %s", ul_lock_path(lock, i));
            printf("\n");
            for (unsigned left = work; left > 0;) left = sleep(left); /* the work an update must not interrupt */
            if (ul_release(lock) == UL_OK) {
                printf("released the update lock\n");
            } else {
                char msg[512];
                ul_last_error_message(msg, sizeof msg);
                printf("release: %s [%s]\n", msg, ul_result_name(ul_last_error_code()));
            }
        } else {
            char msg[512];
            ul_last_error_message(msg, sizeof msg);
            printf("skipped a unit of work: %s [%s]\n", msg, ul_result_name(ul_last_error_code()));
        }
        for (unsigned left = interval; left > 0 && !stop;) left = sleep(left);
    }
    return 0;
}
