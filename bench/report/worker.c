/*
 * C worker of the side-by-side benchmark report (bench/report.sh). One process per call;
 * the orchestrator (bench/report/report.py) drives it. Modes:
 *
 *   now                          print CLOCK_MONOTONIC in ns (the timestamp the shell
 *                                contenders run as their critical section)
 *   rate DIR SAMPLE_MS WARMUP_MS NAME...
 *                                one round: each NAME (in the given order) runs acquire+
 *                                release cycles on DIR/NAME/updates.lock for SAMPLE_MS after a
 *                                warm-up; prints {"NAME": ops_per_s, ...}
 *         ours   ul_acquire() + ul_release() through libupdate_lock (one path, legacy off)
 *         same   the syscalls core makes, raw (bindings-c/bench/bench.c's floor): lstat(dir)
 *                + fstat(dirfd), openat(O_TMPFILE) + flock(LOCK_EX) + fstat + write(record)
 *                + linkat; fstatat + unlinkat + close; plus geteuid and 4 x getpid
 *         excl   a minimal O_EXCL lock: open(O_CREAT|O_EXCL|O_NOFOLLOW) + flock + write;
 *                unlink + close (the file is not atomically complete, so not the floor)
 *   hold NAME PATH               take the lock (ours | flock | excl), print "ready"; then
 *                                per stdin line: "r" -> t = CLOCK_MONOTONIC, release, print
 *                                t; "a" -> take it again, print "ready"; EOF -> exit
 *   wait NAME PATH               print "start", take the lock waiting in NAME's mode (ours:
 *                                ul_acquire waiting on inotify; flock: blocking flock(2)),
 *                                print CLOCK_MONOTONIC just after, release, exit
 *   spawn CYCLES CMD... [+next CMD...]...
 *                                wall time of running each contender CYCLES times,
 *                                interleaved (order reversed every other cycle); a contender
 *                                is one or more commands separated by "+then", run one after
 *                                the other (each must exit 0); prints [[µs, ...], ...], one
 *                                list per contender
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "update_lock.h"

extern char **environ;

static void die(const char *what)
{
    fprintf(stderr, "report worker (C): %s: %s\n", what, strerror(errno));
    exit(1);
}

static long long mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

struct lk {
    const char *path;
    char dir[512], name[256];
    int dir_fd;
    ul_options opts;
    const char *paths[1];
    char record[1024];
    size_t record_len;
    int as_root;
    /* held state */
    ul_lock *ours;
    int fd;
};

static void lk_init(struct lk *l, const char *path)
{
    char tmp[512];
    memset(l, 0, sizeof *l);
    l->path = path;
    l->fd = -1;
    snprintf(tmp, sizeof tmp, "%s", path);
    snprintf(l->dir, sizeof l->dir, "%s", dirname(tmp));
    snprintf(tmp, sizeof tmp, "%s", path);
    snprintf(l->name, sizeof l->name, "%s", basename(tmp));
    l->dir_fd = open(l->dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC | O_NOFOLLOW);
    if (l->dir_fd < 0)
        die("open lock directory");
    l->as_root = geteuid() == 0;
    if (ul_options_init(&l->opts, sizeof l->opts) != UL_OK)
        die("ul_options_init");
    l->paths[0] = path;
    l->opts.paths = l->paths;
    l->opts.path_count = 1;
    l->opts.timeout_ms = 0;
}

static void ours_acquire(struct lk *l, int64_t timeout_ms)
{
    l->opts.timeout_ms = timeout_ms;
    if (ul_acquire(&l->opts, &l->ours) != UL_OK) {
        char msg[1024];
        ul_last_error_message(msg, sizeof msg);
        fprintf(stderr, "report worker (C): ul_acquire: %s\n", msg);
        exit(1);
    }
}

static void ours_release(struct lk *l)
{
    if (ul_release(l->ours) != UL_OK) {
        fprintf(stderr, "report worker (C): ul_release failed\n");
        exit(1);
    }
    l->ours = NULL;
}

static void cycle_ours(struct lk *l)
{
    ours_acquire(l, 0);
    ours_release(l);
}

static void cycle_same(struct lk *l)
{
    struct stat st;
    int fd;
    if (geteuid() == (uid_t)-1)
        die("geteuid");
    if (lstat(l->dir, &st) != 0 || fstat(l->dir_fd, &st) != 0)
        die("stat dir");
    if (getpid() < 0)
        die("getpid");
    fd = openat(l->dir_fd, ".", O_TMPFILE | O_RDWR | O_CLOEXEC, 0644);
    if (fd < 0)
        die("open O_TMPFILE");
    if (flock(fd, LOCK_EX) != 0)
        die("flock");
    if (fstat(fd, &st) != 0)
        die("fstat");
    if (write(fd, l->record, l->record_len) != (ssize_t)l->record_len)
        die("write");
    if (l->as_root) {
        if (linkat(fd, "", l->dir_fd, l->name, AT_EMPTY_PATH) != 0)
            die("linkat");
    } else {
        char proc[64];
        snprintf(proc, sizeof proc, "/proc/self/fd/%d", fd);
        if (linkat(AT_FDCWD, proc, l->dir_fd, l->name, AT_SYMLINK_FOLLOW) != 0)
            die("linkat /proc");
    }
    if (getpid() < 0 || getpid() < 0)
        die("getpid");
    if (fstatat(l->dir_fd, l->name, &st, AT_SYMLINK_NOFOLLOW) != 0)
        die("fstatat");
    if (unlinkat(l->dir_fd, l->name, 0) != 0)
        die("unlinkat");
    close(fd);
    if (getpid() < 0)
        die("getpid");
}

static void excl_acquire(struct lk *l, int record)
{
    l->fd = open(l->path, O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC | O_RDWR, 0644);
    if (l->fd < 0)
        die("open O_EXCL");
    if (record) {
        if (flock(l->fd, LOCK_EX) != 0)
            die("flock");
        if (write(l->fd, l->record, l->record_len) != (ssize_t)l->record_len)
            die("write");
    } else if (write(l->fd, "0", 1) != 1) {
        die("write");
    }
}

static void excl_release(struct lk *l)
{
    if (unlink(l->path) != 0)
        die("unlink");
    close(l->fd);
    l->fd = -1;
}

static void cycle_excl(struct lk *l)
{
    excl_acquire(l, 1);
    excl_release(l);
}

typedef void (*cycle_fn)(struct lk *);

static cycle_fn cycle_of(const char *name)
{
    if (strcmp(name, "ours") == 0)
        return cycle_ours;
    if (strcmp(name, "same") == 0)
        return cycle_same;
    if (strcmp(name, "excl") == 0)
        return cycle_excl;
    fprintf(stderr, "report worker (C): unknown contender %s\n", name);
    exit(2);
}

static int mode_rate(int argc, char **argv)
{
    char path[600], sub[560];
    static struct lk l;
    struct stat st;
    double sample_s, warmup_s;
    int i;
    if (argc < 4)
        return 2;
    sample_s = atof(argv[1]) / 1000.0;
    warmup_s = atof(argv[2]) / 1000.0;
    printf("{");
    for (i = 3; i < argc; i++) {
        cycle_fn f = cycle_of(argv[i]);
        long long t0, end, n = 0, t;
        snprintf(sub, sizeof sub, "%.400s/%.100s", argv[0], argv[i]);
        if (mkdir(sub, 0755) != 0 && errno != EEXIST)
            die("mkdir");
        snprintf(path, sizeof path, "%s/updates.lock", sub);
        if (l.dir_fd > 0)
            close(l.dir_fd);
        lk_init(&l, path);
        /* The raw variants write a record as long as ours. */
        ours_acquire(&l, 0);
        if (lstat(path, &st) != 0)
            die("lstat");
        l.record_len = (size_t)st.st_size < sizeof l.record ? (size_t)st.st_size : sizeof l.record;
        memset(l.record, 'x', l.record_len);
        ours_release(&l);
        t0 = mono_ns();
        while (mono_ns() - t0 < (long long)(warmup_s * 1e9))
            f(&l);
        t0 = mono_ns();
        end = t0 + (long long)(sample_s * 1e9);
        do {
            int k;
            for (k = 0; k < 20; k++)
                f(&l);
            n += 20;
        } while ((t = mono_ns()) < end);
        printf("%s\"%s\": %.1f", i > 3 ? ", " : "", argv[i], (double)n * 1e9 / (double)(t - t0));
    }
    printf("}\n");
    return 0;
}

static void take(struct lk *l, const char *name)
{
    if (strcmp(name, "ours") == 0) {
        ours_acquire(l, -1);
    } else if (strcmp(name, "flock") == 0) {
        /* What flock(1) does: open (creating), flock(LOCK_EX); released by closing. */
        l->fd = open(l->path, O_RDONLY | O_CREAT | O_NOCTTY | O_CLOEXEC, 0666);
        if (l->fd < 0)
            die("open");
        if (flock(l->fd, LOCK_EX) != 0)
            die("flock");
    } else if (strcmp(name, "excl") == 0) {
        /* What procmail's lockfile does (a file that exists), released by unlink. */
        excl_acquire(l, 0);
    } else {
        fprintf(stderr, "report worker (C): unknown lock %s\n", name);
        exit(2);
    }
}

static void give(struct lk *l, const char *name)
{
    if (strcmp(name, "ours") == 0) {
        ours_release(l);
    } else if (strcmp(name, "flock") == 0) {
        close(l->fd);
        l->fd = -1;
    } else {
        excl_release(l);
    }
}

static int mode_hold(int argc, char **argv)
{
    struct lk l;
    char line[64];
    if (argc < 2)
        return 2;
    lk_init(&l, argv[1]);
    take(&l, argv[0]);
    printf("ready\n");
    fflush(stdout);
    while (fgets(line, sizeof line, stdin) != NULL) {
        if (line[0] == 'r') {
            long long t = mono_ns();
            give(&l, argv[0]);
            printf("%lld\n", t);
        } else if (line[0] == 'a') {
            take(&l, argv[0]);
            printf("ready\n");
        }
        fflush(stdout);
    }
    return 0;
}

static int mode_wait(int argc, char **argv)
{
    struct lk l;
    long long t;
    if (argc < 2)
        return 2;
    lk_init(&l, argv[1]);
    printf("start\n");
    fflush(stdout);
    take(&l, argv[0]);
    t = mono_ns();
    printf("%lld\n", t);
    fflush(stdout);
    give(&l, argv[0]);
    return 0;
}

static void run_cmd(char **argv)
{
    pid_t pid;
    int status, rc;
    rc = posix_spawnp(&pid, argv[0], NULL, NULL, argv, environ);
    if (rc != 0) {
        errno = rc;
        die(argv[0]);
    }
    if (waitpid(pid, &status, 0) < 0)
        die("waitpid");
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
        fprintf(stderr, "report worker (C): %s failed (status 0x%x)\n", argv[0], status);
        exit(1);
    }
}

static int mode_spawn(int argc, char **argv)
{
    /* contenders[c] = list of argv starts; commands are NULL-terminated in place. */
    char **cmds[16][4];
    int ncmd[16] = {0}, nc = 1, cycles, i, c, k;
    double *res[16];
    if (argc < 2)
        return 2;
    cycles = atoi(argv[0]);
    cmds[0][0] = &argv[1];
    ncmd[0] = 1;
    for (i = 1; i < argc; i++) {
        if (strcmp(argv[i], "+next") == 0 || strcmp(argv[i], "+then") == 0) {
            int new_contender = argv[i][1] == 'n';
            argv[i] = NULL;
            if (new_contender) {
                if (nc == 16)
                    return 2;
                nc++;
            }
            if (ncmd[nc - 1] == 4)
                return 2;
            cmds[nc - 1][ncmd[nc - 1]++] = &argv[i + 1];
        }
    }
    for (c = 0; c < nc; c++) {
        res[c] = calloc((size_t)cycles, sizeof(double));
        if (res[c] == NULL)
            die("calloc");
    }
    for (i = 0; i < cycles; i++) {
        for (k = 0; k < nc; k++) {
            long long t0;
            c = i % 2 == 0 ? k : nc - 1 - k;
            t0 = mono_ns();
            {
                int j;
                for (j = 0; j < ncmd[c]; j++)
                    run_cmd(cmds[c][j]);
            }
            res[c][i] = (double)(mono_ns() - t0) / 1000.0;
        }
    }
    printf("[");
    for (c = 0; c < nc; c++) {
        printf("%s[", c ? ", " : "");
        for (i = 0; i < cycles; i++)
            printf("%s%.1f", i ? ", " : "", res[c][i]);
        printf("]");
    }
    printf("]\n");
    return 0;
}

int main(int argc, char **argv)
{
    if (argc >= 2 && strcmp(argv[1], "now") == 0) {
        printf("%lld\n", mono_ns());
        return 0;
    }
    if (argc >= 2 && strcmp(argv[1], "rate") == 0)
        return mode_rate(argc - 2, argv + 2);
    if (argc >= 2 && strcmp(argv[1], "hold") == 0)
        return mode_hold(argc - 2, argv + 2);
    if (argc >= 2 && strcmp(argv[1], "wait") == 0)
        return mode_wait(argc - 2, argv + 2);
    if (argc >= 2 && strcmp(argv[1], "spawn") == 0)
        return mode_spawn(argc - 2, argv + 2);
    fprintf(stderr, "usage: worker now | rate DIR SAMPLE_MS WARMUP_MS NAME... | hold NAME PATH | "
                    "wait NAME PATH | spawn CYCLES CMD... [+next CMD...]...\n");
    return 2;
}
