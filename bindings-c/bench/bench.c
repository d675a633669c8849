/*
 * Acquire+release throughput through the C API (libupdate_lock, release build) against the
 * same syscalls written directly in C: the floor.
 *
 * Variants, per file system (tmpfs /dev/shm, and /tmp) and for one and two lock paths
 * (balena/updates.lock and resin/resin-updates.lock in two directories, as on a device):
 *
 *   ours   ul_acquire() + ul_release() with explicit paths (a holder record is written)
 *   same   the syscall sequence core performs, done raw: geteuid(); per path lstat(dir) + fstat(dirfd)
 *          (core checks that its cached directory descriptor still names the directory),
 *          openat(dirfd, ".", O_TMPFILE) + flock(LOCK_EX) + fstat + write(record of the same
 *          length) + linkat(AT_EMPTY_PATH, or via /proc/self/fd without CAP_DAC_READ_SEARCH);
 *          release, last path first: fstatat (still ours?) + unlinkat + close.
 *          Plus core's identity syscalls where it makes them: getpid() after the directory
 *          checks, two after the files are in place (lock made / release starts), one after
 *          release (fork safety). Syscall for syscall what strace shows for `ours`: the
 *          floor of the target.
 *   lock   `same` without the identity syscalls (geteuid, 4 x getpid): the stricter floor
 *          the foundation benchmark used, for information.
 *   excl   (information) a minimal O_EXCL lock: open(O_CREAT|O_EXCL|O_NOFOLLOW) + flock +
 *          write; unlink + close.
 *
 * Warm-up, then interleaved rounds (every variant once per round, order reversed every other
 * round), each a batch sized to take about BATCH_MS. Prints a Markdown table (medians,
 * ratios) on stdout.
 *
 * Environment: BENCH_ROUNDS (21), BENCH_BATCH_MS (40), BENCH_WARMUP_MS (300),
 * BENCH_BASES (colon-separated directories, default /dev/shm:/tmp).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <time.h>
#include <unistd.h>

#include "update_lock.h"

#define TMPFS_MAGIC 0x01021994

struct raw_path {
    char full[400], dir[300], name[32];
    int dir_fd;
};

struct setup {
    int npaths;
    const char *paths[2];
    struct raw_path raw[2];
    ul_options opts;
    char record[1024];
    size_t record_len;
    int as_root;
};

static void die(const char *what)
{
    fprintf(stderr, "bench: %s: %s\n", what, strerror(errno));
    exit(1);
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static long env_num(const char *name, long dflt)
{
    const char *v = getenv(name);
    return v != NULL && *v != '\0' ? strtol(v, NULL, 10) : dflt;
}

static void ours(struct setup *s)
{
    ul_lock *lock = NULL;
    if (ul_acquire(&s->opts, &lock) != UL_OK) {
        char msg[1024];
        ul_last_error_message(msg, sizeof msg);
        fprintf(stderr, "bench: ul_acquire: %s\n", msg);
        exit(1);
    }
    if (ul_release(lock) != UL_OK) {
        fprintf(stderr, "bench: ul_release failed\n");
        exit(1);
    }
}

/* The lock syscalls core makes; with `ids`, also its identity syscalls (geteuid() once,
 * getpid() four times per cycle, exactly where core makes them). */
static void raw_cycle(struct setup *s, int ids)
{
    int fds[2];
    int i;
    struct stat st;
    if (ids && geteuid() == (uid_t)-1)
        die("geteuid");
    for (i = 0; i < s->npaths; i++) {
        struct raw_path *p = &s->raw[i];
        if (lstat(p->dir, &st) != 0 || fstat(p->dir_fd, &st) != 0)
            die("stat dir");
    }
    if (ids && getpid() < 0)
        die("getpid");
    for (i = 0; i < s->npaths; i++) {
        struct raw_path *p = &s->raw[i];
        int fd;
        fd = openat(p->dir_fd, ".", O_TMPFILE | O_RDWR | O_CLOEXEC, 0644);
        if (fd < 0)
            die("open O_TMPFILE");
        if (flock(fd, LOCK_EX) != 0)
            die("flock");
        if (fstat(fd, &st) != 0)
            die("fstat");
        if (write(fd, s->record, s->record_len) != (ssize_t)s->record_len)
            die("write");
        if (s->as_root) {
            if (linkat(fd, "", p->dir_fd, p->name, AT_EMPTY_PATH) != 0)
                die("linkat");
        } else {
            char proc[64];
            snprintf(proc, sizeof proc, "/proc/self/fd/%d", fd);
            if (linkat(AT_FDCWD, proc, p->dir_fd, p->name, AT_SYMLINK_FOLLOW) != 0)
                die("linkat /proc");
        }
        fds[i] = fd;
    }
    if (ids && (getpid() < 0 || getpid() < 0))
        die("getpid");
    for (i = s->npaths - 1; i >= 0; i--) {
        struct raw_path *p = &s->raw[i];
        if (fstatat(p->dir_fd, p->name, &st, AT_SYMLINK_NOFOLLOW) != 0)
            die("fstatat");
        if (unlinkat(p->dir_fd, p->name, 0) != 0)
            die("unlinkat");
        close(fds[i]);
    }
    if (ids && getpid() < 0)
        die("getpid");
}

static void same(struct setup *s)
{
    raw_cycle(s, 1);
}

static void lock_only(struct setup *s)
{
    raw_cycle(s, 0);
}

static void excl(struct setup *s)
{
    int fds[2];
    int i;
    for (i = 0; i < s->npaths; i++) {
        int fd = open(s->raw[i].full, O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC | O_RDWR, 0644);
        if (fd < 0)
            die("open O_EXCL");
        if (flock(fd, LOCK_EX) != 0)
            die("flock");
        if (write(fd, s->record, s->record_len) != (ssize_t)s->record_len)
            die("write");
        fds[i] = fd;
    }
    for (i = s->npaths - 1; i >= 0; i--) {
        if (unlink(s->raw[i].full) != 0)
            die("unlink");
        close(fds[i]);
    }
}

typedef void (*variant_fn)(struct setup *);

/* Detail lines printed after the table. */
static char details[8][768];
static int ndetails;

static double time_batch(variant_fn f, struct setup *s, long n)
{
    double t0 = now_s();
    long i;
    for (i = 0; i < n; i++)
        f(s);
    return (double)n / (now_s() - t0);
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double median(const double *v, int n)
{
    double tmp[256];
    memcpy(tmp, v, (size_t)n * sizeof *v);
    qsort(tmp, (size_t)n, sizeof *tmp, cmp_double);
    return n % 2 ? tmp[n / 2] : (tmp[n / 2 - 1] + tmp[n / 2]) / 2.0;
}

static const char *fs_name(const char *path)
{
    struct statfs sf;
    if (statfs(path, &sf) != 0)
        return "?";
    switch ((unsigned long)sf.f_type) {
    case TMPFS_MAGIC: return "tmpfs";
    case 0xEF53: return "ext4";
    case 0x9123683E: return "btrfs";
    case 0x58465342: return "xfs";
    case 0x794c7630: return "overlayfs";
    default: return "other";
    }
}

static void bench(const char *base, int npaths, int rounds, double batch_s, double warmup_s)
{
#define NV 4
    static const char *names[NV] = {"ours", "same", "lock", "excl"};
    variant_fn fns[NV] = {ours, same, lock_only, excl};
    double res[NV][256];
    struct setup s;
    char root[256];
    long batch, n = 0;
    double first = 0.0, t, med[NV], ratios[256], rmed, lratios[256], lmed;
    int r, k, i;
    struct stat st;

    memset(&s, 0, sizeof s);
    if (strlen(base) > 200) {
        fprintf(stderr, "bench: base path too long\n");
        exit(1);
    }
    snprintf(root, sizeof root, "%.200s/ul-c-bench.XXXXXX", base);
    if (mkdtemp(root) == NULL)
        die("mkdtemp");
    s.npaths = npaths;
    for (i = 0; i < npaths; i++) {
        struct raw_path *p = &s.raw[i];
        snprintf(p->dir, sizeof p->dir, "%.256s/%s", root, i == 0 ? "balena" : "resin");
        snprintf(p->name, sizeof p->name, "%s", i == 0 ? "updates.lock" : "resin-updates.lock");
        snprintf(p->full, sizeof p->full, "%.290s/%.31s", p->dir, p->name);
        if (mkdir(p->dir, 01777) != 0)
            die("mkdir");
        p->dir_fd = open(p->dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC | O_NOFOLLOW);
        if (p->dir_fd < 0)
            die("open dir");
        s.paths[i] = p->full;
    }
    s.as_root = geteuid() == 0;
    if (ul_options_init(&s.opts, sizeof s.opts) != UL_OK)
        die("ul_options_init");
    s.opts.paths = s.paths;
    s.opts.path_count = (size_t)npaths;
    s.opts.timeout_ms = 5000;

    /* The raw variants write a record as long as ours. */
    {
        ul_lock *lock = NULL;
        if (ul_acquire(&s.opts, &lock) != UL_OK || lstat(s.paths[0], &st) != 0)
            die("first acquire");
        s.record_len = (size_t)st.st_size;
        ul_release(lock);
        if (s.record_len > sizeof s.record)
            s.record_len = sizeof s.record;
        memset(s.record, 'x', s.record_len);
    }

    /* Warm-up; the batch size makes one batch of `ours` last about batch_s. */
    t = now_s();
    while (now_s() - t < warmup_s) {
        for (k = 0; k < NV; k++) {
            double t0 = now_s();
            fns[k](&s);
            if (k == 0)
                first += now_s() - t0;
        }
        n++;
    }
    batch = (long)(batch_s / (first / (double)(n > 0 ? n : 1)));
    if (batch < 50)
        batch = 50;
    if (batch > 200000)
        batch = 200000;

    for (r = 0; r < rounds; r++)
        for (i = 0; i < NV; i++) {
            k = r % 2 == 0 ? i : NV - 1 - i;
            res[k][r] = time_batch(fns[k], &s, batch);
        }
    for (k = 0; k < NV; k++)
        med[k] = median(res[k], rounds);
    for (r = 0; r < rounds; r++) {
        ratios[r] = res[1][r] / res[0][r];
        lratios[r] = res[2][r] / res[0][r];
    }
    rmed = median(ratios, rounds);
    lmed = median(lratios, rounds);

    printf("| %s, %s (%s) | %.0f ops/s (%.1f µs) | %.0f ops/s (%.1f µs) | %.2fx | %.2fx | ≤ 1.2x | %s |\n",
           npaths == 2 ? "two paths" : "one path", base, fs_name(base), med[0], 1e6 / med[0],
           med[1], 1e6 / med[1], med[1] / med[0], rmed, med[1] / med[0] <= 1.2 ? "met" : "MISSED");
    printf("| %s, %s (%s): vs the lock syscalls only (without core's 4 getpid + 1 geteuid), stricter | %.0f ops/s (%.1f µs) | %.0f ops/s (%.1f µs) | %.2fx | %.2fx | (information) | |\n",
           npaths == 2 ? "two paths" : "one path", base, fs_name(base), med[0], 1e6 / med[0],
           med[2], 1e6 / med[2], med[2] / med[0], lmed);
    printf("| %s, %s (%s): vs a minimal O_EXCL lock | %.0f ops/s (%.1f µs) | %.0f ops/s (%.1f µs) | %.2fx | | (information) | |\n",
           npaths == 2 ? "two paths" : "one path", base, fs_name(base), med[0], 1e6 / med[0],
           med[3], 1e6 / med[3], med[3] / med[0]);
    fflush(stdout);
    if (ndetails < 8) {
        double so[256], sf[256];
        memcpy(so, res[0], (size_t)rounds * sizeof so[0]);
        memcpy(sf, res[1], (size_t)rounds * sizeof sf[0]);
        qsort(so, (size_t)rounds, sizeof so[0], cmp_double);
        qsort(sf, (size_t)rounds, sizeof sf[0], cmp_double);
        snprintf(details[ndetails++], sizeof details[0],
                 "- %s, %s: %d rounds x %ld cycles, record %zu bytes; ours min/median/max "
                 "%.0f/%.0f/%.0f ops/s, floor %.0f/%.0f/%.0f ops/s; ours costs %+.1f µs per "
                 "cycle over the floor.",
                 npaths == 2 ? "two paths" : "one path", base, rounds, batch, s.record_len, so[0],
                 med[0], so[rounds - 1], sf[0], med[1], sf[rounds - 1], 1e6 / med[0] - 1e6 / med[1]);
    }
    fprintf(stderr, "bench: %s %d path(s): %d rounds x %ld cycles, record %zu bytes;", base,
            npaths, rounds, batch, s.record_len);
    for (k = 0; k < NV; k++)
        fprintf(stderr, " %s %.0f", names[k], med[k]);
    fprintf(stderr, " ops/s\n");

    for (i = 0; i < npaths; i++) {
        close(s.raw[i].dir_fd);
        rmdir(s.raw[i].dir);
    }
    rmdir(root);
}

int main(void)
{
    int rounds = (int)env_num("BENCH_ROUNDS", 21);
    double batch_s = (double)env_num("BENCH_BATCH_MS", 40) / 1000.0;
    double warmup_s = (double)env_num("BENCH_WARMUP_MS", 300) / 1000.0;
    char bases[1024];
    char *save = NULL, *b;
    int i;
    if (rounds < 1 || rounds > 256)
        rounds = 21;
    snprintf(bases, sizeof bases, "%s", getenv("BENCH_BASES") ? getenv("BENCH_BASES") : "/dev/shm:/tmp");

    printf("| Benchmark | C API (ours) | Floor (same syscalls in C) | Ratio of medians | Median per-round ratio | Target | Verdict |\n");
    printf("|---|---:|---:|---:|---:|---|---|\n");
    for (b = strtok_r(bases, ":", &save); b != NULL; b = strtok_r(NULL, ":", &save)) {
        bench(b, 2, rounds, batch_s, warmup_s);
        bench(b, 1, rounds, batch_s, warmup_s);
    }
    printf("\n### Details\n\n");
    for (i = 0; i < ndetails; i++)
        printf("%s\n", details[i]);
    return 0;
}
