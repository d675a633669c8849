/* C torture holder (see holder.py): ul_acquire, inside.py, ul_check, ul_release, forever.
 *   holder DIR MARKER HOLD_MAX_MS INSIDE_PY */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "update_lock.h"

int main(int argc, char **argv) {
    if (argc != 5) return 64;
    char a[4096], b[4096];
    snprintf(a, sizeof a, "%s/updates.lock", argv[1]);
    snprintf(b, sizeof b, "%s/resin-updates.lock", argv[1]);
    const char *paths[] = {a, b};
    setvbuf(stdout, NULL, _IOLBF, 0);
    for (;;) {
        ul_options o;
        ul_options_init(&o, sizeof o);
        o.paths = paths;
        o.path_count = 2;
        o.timeout_ms = 10000;
        ul_lock *lock = NULL;
        printf("acquiring\n");
        int rc = ul_acquire(&o, &lock);
        if (rc != UL_OK) {
            printf("err %s\n", ul_result_name(rc));
            continue;
        }
        pid_t pid = fork();
        if (pid == 0) {
            execlp("python3", "python3", argv[4], argv[2], a, argv[3], (char *)NULL);
            _exit(127);
        }
        int st;
        waitpid(pid, &st, 0);
        int lost = ul_check(lock) == UL_ERR_LOST;
        if (ul_release(lock) == UL_ERR_LOST) lost = 1;
        printf(lost ? "done lost\n" : "done ok\n");
        usleep((useconds_t)(rand() % 400000)); /* a gap the Supervisor can take the lock in */
    }
}
