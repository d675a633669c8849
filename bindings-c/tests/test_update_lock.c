/*
 * Tests of libupdate_lock through its C API, against the real readers of the lock:
 * procmail's `lockfile -r 0` run as uid 65534 (what the balena Supervisor does), the host OS
 * reboot's `flock -nx FILE -c true`, and `lockctl` (the CLI on the same core).
 *
 * Multi-process: helpers are fork+exec'd, synchronised through pipes and waitpid (no sleeps).
 * Built by tests/run.sh with -std=c99 -Wall -Wextra -Werror -pedantic and run under valgrind
 * and under ASan/UBSan. Environment: LOCKCTL (path of lockctl), UL_EXPECTED_VERSION,
 * UL_HANDOVER_PEER (the hand-over peer program built from tests/handover_peer.c).
 * Ends with "c tests: N passed, M failed"; exits 1 if anything failed.
 * Run a subset: test_update_lock NAME-SUBSTRING...
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include "update_lock.h"

/* Debug builds of the library export this test hook (not in the header). */
ul_result ul_debug_panic(void);

/* ------------------------------------------------------------------------------------ */
/* A small test harness */

static int current_failed;
static const char *current_name;

static void fail_at(const char *file, int line, const char *fmt, ...)
{
    va_list ap;
    char msg[1024];
    fprintf(stderr, "  FAIL %s (%s:%d): ", current_name, file, line);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    msg[0] = '\0';
    ul_last_error_message(msg, sizeof msg);
    if (msg[0] != '\0')
        fprintf(stderr, "\n    last error [%s]: %s", ul_result_name((int)ul_last_error_code()), msg);
    fprintf(stderr, "\n");
    current_failed = 1;
}

#define CHECK(cond, ...)                                   \
    do {                                                   \
        if (!(cond)) {                                     \
            fail_at(__FILE__, __LINE__, __VA_ARGS__);      \
            return;                                        \
        }                                                  \
    } while (0)

#define CHECK_RESULT(call, want)                                                        \
    do {                                                                                \
        ul_result got_ = (call);                                                        \
        if (got_ != (want)) {                                                           \
            fail_at(__FILE__, __LINE__, "%s returned %s (%d), expected %s", #call,       \
                    ul_result_name((int)got_), (int)got_, ul_result_name((int)(want)));  \
            return;                                                                     \
        }                                                                               \
    } while (0)

/* The thread's last error message (static buffer: one at a time). */
static const char *last_message(void)
{
    static char buf[4096];
    ul_last_error_message(buf, sizeof buf);
    return buf;
}

#define CHECK_MESSAGE_HAS(needle)                                                        \
    CHECK(strstr(last_message(), (needle)) != NULL, "message lacks \"%s\": %s", (needle), \
          last_message())

/* ------------------------------------------------------------------------------------ */
/* Fixtures: a fresh service directory (mode 1777, as the Supervisor makes it) per test */

static char tmp_root[256];
static char svc[512];
static const char *lockctl;

static int svc_count;

static void make_svc(void)
{
    snprintf(svc, sizeof svc, "%s/svc%d", tmp_root, ++svc_count);
    if (mkdir(svc, 01777) != 0 || chmod(svc, 01777) != 0) {
        perror("mkdir service directory");
        exit(2);
    }
}

/* A path inside the service directory (rotating static buffers). */
static const char *in_svc(const char *name)
{
    static char bufs[8][1024];
    static int i;
    char *b = bufs[i++ % 8];
    snprintf(b, sizeof bufs[0], "%s/%s", svc, name);
    return b;
}

static int exists(const char *path)
{
    struct stat st;
    return lstat(path, &st) == 0;
}

static uid_t owner_of(const char *path)
{
    struct stat st;
    return lstat(path, &st) == 0 ? st.st_uid : (uid_t)-1;
}

/* Read a whole small file into a static buffer ("" if missing). */
static const char *slurp(const char *path)
{
    static char buf[8192];
    ssize_t n = 0;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    buf[0] = '\0';
    if (fd < 0)
        return buf;
    n = read(fd, buf, sizeof buf - 1);
    close(fd);
    buf[n > 0 ? n : 0] = '\0';
    return buf;
}

static ul_options opts_for(const char **paths, size_t n)
{
    ul_options o;
    if (ul_options_init(&o, sizeof o) != UL_OK) {
        fprintf(stderr, "ul_options_init failed\n");
        exit(2);
    }
    o.paths = paths;
    o.path_count = n;
    o.program = "c-tests";
    return o;
}

/* ------------------------------------------------------------------------------------ */
/* Processes */

/* Run argv, stdin from /dev/null, stdout to `out_fd` (or /dev/null if -1), stderr kept;
 * the exit status, 128+N if killed by signal N, or -1 if it could not run. */
static int run_to(int out_fd, char *const argv[])
{
    int status = 0;
    pid_t pid = fork();
    if (pid < 0)
        return -1;
    if (pid == 0) {
        int null = open("/dev/null", O_RDWR);
        dup2(null, 0);
        dup2(out_fd >= 0 ? out_fd : null, 1);
        execvp(argv[0], argv);
        _exit(127);
    }
    while (waitpid(pid, &status, 0) < 0)
        if (errno != EINTR)
            return -1;
    if (WIFEXITED(status))
        return WEXITSTATUS(status);
    return WIFSIGNALED(status) ? 128 + WTERMSIG(status) : -1;
}

#define RUN(...) run_to(-1, (char *const[]){__VA_ARGS__, NULL})

/* Run argv and capture its stdout into a static buffer. */
static const char *run_capture(int *status, char *const argv[])
{
    static char buf[16384];
    size_t len = 0;
    int fds[2];
    pid_t pid;
    int st = 0;
    buf[0] = '\0';
    if (pipe2(fds, O_CLOEXEC) != 0) {
        *status = -1;
        return buf;
    }
    pid = fork();
    if (pid == 0) {
        int null = open("/dev/null", O_RDWR);
        dup2(null, 0);
        dup2(fds[1], 1);
        execvp(argv[0], argv);
        _exit(127);
    }
    close(fds[1]);
    for (;;) {
        ssize_t n = read(fds[0], buf + len, sizeof buf - 1 - len);
        if (n > 0)
            len += (size_t)n;
        else if (n == 0 || errno != EINTR || len == sizeof buf - 1)
            break;
    }
    buf[len] = '\0';
    close(fds[0]);
    waitpid(pid, &st, 0);
    *status = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
    return buf;
}

/* The reboot script's probe: 0 = it would get the flock, 1 = held. Only on existing files
 * (flock(1) creates a missing one). */
static int reboot_probe(const char *path)
{
    return RUN("flock", "-nx", (char *)path, "-c", "true");
}

/* The Supervisor's lock attempt: 0 = it took the lock, 73 = held. */
static int supervisor_lockfile(const char *path)
{
    return RUN("setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "lockfile", "-r",
               "0", (char *)path);
}

/* Wait for a child we forked and return its exit status (or 128+signal). */
static int wait_child(pid_t pid)
{
    int st = 0;
    while (waitpid(pid, &st, 0) < 0)
        if (errno != EINTR)
            return -1;
    if (WIFEXITED(st))
        return WEXITSTATUS(st);
    return WIFSIGNALED(st) ? 128 + WTERMSIG(st) : -1;
}

/* ------------------------------------------------------------------------------------ */
/* Tests */

static void test_version_and_result_names(void)
{
    const char *want = getenv("UL_EXPECTED_VERSION");
    static const struct {
        int code;
        const char *name;
    } names[] = {
        {UL_OK, "ok"},
        {UL_ERR_HELD, "held"},
        {UL_ERR_TIMEOUT, "timeout"},
        {UL_ERR_LOST, "lost"},
        {UL_ERR_PERMISSION, "permission"},
        {UL_ERR_SUPERVISOR_UID, "supervisor-uid"},
        {UL_ERR_INVALID_PATH, "invalid-path"},
        {UL_ERR_IO, "io"},
        {UL_ERR_CANCELLED, "cancelled"},
        {UL_ERR_NOT_HELD, "not-held"},
        {UL_ERR_HANDOVER, "handover"},
        {UL_ERR_API, "api"},
        {UL_ERR_UNKNOWN, "unknown"},
        {UL_ERR_NULL_ARGUMENT, "null-argument"},
        {UL_ERR_INVALID_ARGUMENT, "invalid-argument"},
        {UL_ERR_BUFFER_TOO_SMALL, "buffer-too-small"},
        {UL_ERR_PANIC, "panic"},
    };
    size_t i;
    CHECK(want != NULL, "UL_EXPECTED_VERSION is not set");
    CHECK(strcmp(ul_version(), want) == 0, "ul_version() = %s, want %s", ul_version(), want);
    /* The numbers are part of the ABI. */
    CHECK(UL_ERR_HELD == 1 && UL_ERR_NOT_HELD == 9 && UL_ERR_HANDOVER == 10 && UL_ERR_API == 11 && UL_ERR_UNKNOWN == 12 &&
              UL_ERR_NULL_ARGUMENT == 100 && UL_ERR_PANIC == 199,
          "result numbers changed");
    for (i = 0; i < sizeof names / sizeof names[0]; i++)
        CHECK(strcmp(ul_result_name(names[i].code), names[i].name) == 0,
              "ul_result_name(%d) = %s, want %s", names[i].code, ul_result_name(names[i].code),
              names[i].name);
    CHECK(strcmp(ul_result_name(12), "unknown") == 0, "code 12");
    CHECK(strcmp(ul_result_name(-1), "unknown") == 0, "code -1");
    CHECK(strcmp(ul_state_name(UL_STATE_HELD_BY_SUPERVISOR), "held-by-supervisor") == 0, "state");
    CHECK(strcmp(ul_state_name(42), "unknown") == 0, "state 42");
    CHECK(strcmp(ul_foreign_kind_name(UL_FOREIGN_LOCKFILE_FORMAT), "lockfile-format") == 0, "kind");
    CHECK(strcmp(ul_foreign_kind_name(UL_FOREIGN_NONE), "none") == 0, "kind none");
    CHECK(strcmp(ul_foreign_kind_name(99), "unknown") == 0, "kind 99");
}

static void test_options_init_defaults_and_versioning(void)
{
    struct {
        ul_options o;
        unsigned char newer_fields[32];
    } big;
    ul_options o;
    ul_handover_options h;
    size_t i;
    memset(&o, 0xAB, sizeof o);
    CHECK_RESULT(ul_options_init(&o, sizeof o), UL_OK);
    CHECK(o.struct_size == sizeof o, "struct_size %zu", o.struct_size);
    CHECK(o.paths == NULL && o.path_count == 0, "default paths");
    CHECK(o.legacy && o.reclaim_stale && o.create_dir, "default flags");
    CHECK(o.timeout_ms == -1, "default timeout %lld", (long long)o.timeout_ms);
    CHECK(o.program == NULL && o.cancel == NULL, "default program/cancel");
    CHECK(ul_last_error_code() == UL_OK, "success must clear the last error");

    /* A caller built against a newer header passes a bigger struct: the unknown tail is
     * zeroed and the size kept. */
    memset(&big, 0xAB, sizeof big);
    CHECK_RESULT(ul_options_init(&big.o, sizeof big), UL_OK);
    CHECK(big.o.struct_size == sizeof big, "big struct_size");
    for (i = 0; i < sizeof big.newer_fields; i++)
        CHECK(big.newer_fields[i] == 0, "tail byte %zu not zeroed", i);

    CHECK(!o.shared && o.on_wait == NULL && o.on_wait_data == NULL, "0.2 defaults");

    {
        /* A program built against the 0.1 header (before shared and on_wait): its smaller
         * struct is initialised and read as 0.1, and locks in exclusive mode. */
        struct options_v01 {
            size_t struct_size;
            const char *const *paths;
            size_t path_count;
            bool legacy;
            int64_t timeout_ms;
            bool reclaim_stale;
            bool create_dir;
            const char *program;
            const ul_cancel_token *cancel;
        } v01;
        const char *p01[1];
        ul_lock *l01 = NULL, *l02 = NULL;
        make_svc();
        p01[0] = in_svc("v01.lock");
        memset(&v01, 0xAB, sizeof v01);
        CHECK_RESULT(ul_options_init((ul_options *)&v01, sizeof v01), UL_OK);
        CHECK(v01.struct_size == sizeof v01 && v01.timeout_ms == -1 && v01.cancel == NULL,
              "0.1 defaults");
        v01.paths = p01;
        v01.path_count = 1;
        v01.timeout_ms = 0;
        CHECK_RESULT(ul_acquire((ul_options *)&v01, &l01), UL_OK);
        CHECK_RESULT(ul_acquire((ul_options *)&v01, &l02), UL_ERR_ALREADY_HELD);
        CHECK_RESULT(ul_release(l01), UL_OK);
    }

    /* Too small: refused, and the message says how to call it. */
    CHECK_RESULT(ul_options_init(&o, sizeof o - 1), UL_ERR_INVALID_ARGUMENT);
    CHECK_MESSAGE_HAS("not the size of any version of ul_options");
    CHECK_MESSAGE_HAS("ul_options_init(p, sizeof *p)");

    CHECK_RESULT(ul_handover_options_init(&h, sizeof h), UL_OK);
    CHECK(h.struct_size == sizeof h && h.paths == NULL && h.path_count == 0 && h.legacy,
          "handover defaults");
    CHECK_RESULT(ul_handover_options_init(&h, 3), UL_ERR_INVALID_ARGUMENT);
}

static void test_acquire_release_both_readers_see_it(void)
{
    const char *p;
    const char *paths[1];
    ul_options o;
    ul_lock *lock = NULL;
    const char *content;
    int fd;
    make_svc();
    p = in_svc("updates.lock");
    paths[0] = p;
    o = opts_for(paths, 1);

    CHECK_RESULT(ul_acquire(&o, &lock), UL_OK);
    CHECK(lock != NULL, "no handle");
    CHECK(exists(p), "lock file missing while held");
    CHECK(owner_of(p) == 0, "lock file owned by %d", (int)owner_of(p));
    content = slurp(p);
    CHECK(strncmp(content, "update-lock holder v1\n", 22) == 0, "record: %s", content);
    CHECK(strstr(content, "program=c-tests\n") != NULL, "program in record: %s", content);
    CHECK(reboot_probe(p) == 1, "the reboot probe (flock -nx) must fail while held");
    CHECK(supervisor_lockfile(p) == 73, "the Supervisor's lockfile must see the lock (73)");
    CHECK(exists(p) && owner_of(p) == 0, "readers changed the lock file");

    /* Accessors. */
    CHECK(ul_is_held(lock), "ul_is_held");
    CHECK_RESULT(ul_check(lock), UL_OK);
    CHECK(ul_lock_path_count(lock) == 1, "path count %zu", ul_lock_path_count(lock));
    CHECK(strcmp(ul_lock_path(lock, 0), p) == 0, "path 0 = %s", ul_lock_path(lock, 0));
    CHECK(ul_lock_path(lock, 1) == NULL, "path 1 must be NULL");
    CHECK(ul_lock_fd(lock, 0) >= 0, "fd");
    CHECK(ul_lock_fd(lock, 1) == -1, "fd 1 must be -1");
    CHECK((fcntl(ul_lock_fd(lock, 0), F_GETFD) & FD_CLOEXEC) != 0, "fd must be close-on-exec");
    fd = open(p, O_RDONLY | O_CLOEXEC);
    CHECK(fd >= 0, "open lock file");
    CHECK(flock(fd, LOCK_EX | LOCK_NB) != 0 && errno == EWOULDBLOCK,
          "a fresh descriptor must not get the flock");
    close(fd);

    CHECK_RESULT(ul_release(lock), UL_OK);
    CHECK(!exists(p), "lock file left behind after release");
    /* Free again: the Supervisor gets it now. */
    CHECK(supervisor_lockfile(p) == 0, "the Supervisor's lockfile must succeed after release");
    CHECK(owner_of(p) == 65534, "Supervisor lock owner");
    unlink(p);
}

static void test_two_paths_all_or_nothing(void)
{
    const char *paths[2];
    ul_options o;
    ul_lock *lock = NULL;
    char where[1024];
    ul_holder h;
    char strings[2048];
    size_t needed = 0;
    make_svc();
    paths[0] = in_svc("updates.lock");
    paths[1] = in_svc("resin-updates.lock");
    o = opts_for(paths, 2);

    CHECK_RESULT(ul_acquire(&o, &lock), UL_OK);
    CHECK(exists(paths[0]) && exists(paths[1]), "both paths must exist");
    CHECK(ul_lock_path_count(lock) == 2, "count");
    CHECK(strcmp(ul_lock_path(lock, 1), paths[1]) == 0, "path 1");
    CHECK_RESULT(ul_release(lock), UL_OK);
    CHECK(!exists(paths[0]) && !exists(paths[1]), "both paths must be gone");

    /* The Supervisor holds the legacy name: nothing is taken, the first path is undone. */
    CHECK(supervisor_lockfile(paths[1]) == 0, "supervisor lockfile");
    o.timeout_ms = 0;
    CHECK_RESULT(ul_acquire(&o, &lock), UL_ERR_HELD);
    CHECK(lock == NULL, "*out must be NULL on failure");
    CHECK(!exists(paths[0]), "first path must be undone");
    CHECK(exists(paths[1]) && owner_of(paths[1]) == 65534, "Supervisor's lock must stay");
    CHECK_MESSAGE_HAS("balena Supervisor");
    CHECK_MESSAGE_HAS(paths[1]);
    CHECK(ul_last_error_path(where, sizeof where) == strlen(paths[1]), "path length");
    CHECK(strcmp(where, paths[1]) == 0, "ul_last_error_path = %s", where);
    CHECK_RESULT(ul_last_error_holder(&h, strings, sizeof strings, &needed), UL_OK);
    CHECK(h.state == UL_STATE_HELD_BY_SUPERVISOR, "holder state %s", ul_state_name(h.state));
    CHECK(!h.has_record, "no record for the Supervisor");
    CHECK(h.has_owner_uid && h.owner_uid == 65534 && !h.flock_held, "Supervisor owner %u",
          h.owner_uid);
    CHECK(strstr(h.description, "Supervisor") != NULL, "description: %s", h.description);
    CHECK(ul_last_error_code() == UL_ERR_HELD, "ul_last_error_holder must not change the error");
    unlink(paths[1]);
}

static void test_held_by_supervisor_timeout_then_free(void)
{
    const char *paths[1];
    ul_options o;
    ul_lock *lock = NULL;
    make_svc();
    paths[0] = in_svc("updates.lock");
    o = opts_for(paths, 1);

    CHECK(supervisor_lockfile(paths[0]) == 0, "supervisor lockfile");
    CHECK_RESULT(ul_try_acquire(&o, &lock), UL_ERR_HELD);
    CHECK_MESSAGE_HAS("held by the balena Supervisor");
    CHECK_MESSAGE_HAS("wait for the update to settle");
    o.timeout_ms = 100;
    CHECK_RESULT(ul_acquire(&o, &lock), UL_ERR_TIMEOUT);
    CHECK(lock == NULL, "*out must be NULL");
    CHECK_MESSAGE_HAS("timed out after");
    CHECK_MESSAGE_HAS("balena Supervisor");
    CHECK(exists(paths[0]) && owner_of(paths[0]) == 65534, "the Supervisor's lock was touched");
    CHECK(strcmp(slurp(paths[0]), "0") == 0, "content changed");
    /* The Supervisor releases (it deletes its file): the lock is ours. */
    unlink(paths[0]);
    CHECK_RESULT(ul_acquire(&o, &lock), UL_OK);
    CHECK(supervisor_lockfile(paths[0]) == 73, "the Supervisor must now see our lock");
    CHECK_RESULT(ul_release(lock), UL_OK);
}

struct waiter {
    ul_options opts;
    ul_result result;
    ul_lock *lock;
    char message[1024];
};

static void *waiter_thread(void *arg)
{
    struct waiter *w = arg;
    w->result = ul_acquire(&w->opts, &w->lock);
    ul_last_error_message(w->message, sizeof w->message);
    return NULL;
}

static void test_held_by_lockctl_acquire(void)
{
    const char *paths[1];
    ul_options o;
    ul_lock *lock = NULL;
    ul_holder h;
    char strings[2048];
    size_t needed = 0;
    struct waiter w;
    pthread_t t;
    make_svc();
    paths[0] = in_svc("updates.lock");
    o = opts_for(paths, 1);

    CHECK(RUN((char *)lockctl, "acquire", "--path", (char *)paths[0], "--no-legacy") == 0,
          "lockctl acquire");
    CHECK_RESULT(ul_try_acquire(&o, &lock), UL_ERR_HELD);
    CHECK_MESSAGE_HAS("held by another app");
    CHECK_MESSAGE_HAS("lockctl acquire");
    CHECK_RESULT(ul_last_error_holder(&h, strings, sizeof strings, &needed), UL_OK);
    CHECK(h.state == UL_STATE_HELD_BY_APP && h.has_record && h.flock_held, "holder %s",
          ul_state_name(h.state));
    CHECK(strcmp(h.record.program, "lockctl acquire") == 0, "program %s", h.record.program);
    CHECK(h.has_owner_uid && h.owner_uid == h.record.uid, "app owner %u", h.owner_uid);
    CHECK(!h.record.same_process && h.record.same_pid_namespace, "same process/namespace");
    CHECK(h.record.pid > 0 && h.record.pid != getpid(), "pid %d", h.record.pid);
    CHECK(h.record.uid == 0 && h.record.has_acquired_at, "uid/acquired_at");
    CHECK(needed <= sizeof strings && needed > strlen(h.description), "needed %zu", needed);
    CHECK(reboot_probe(paths[0]) == 1, "reboot probe must fail while lockctl holds it");

    /* A waiting acquisition gets the lock once lockctl releases (whichever comes first). */
    memset(&w, 0, sizeof w);
    w.opts = o;
    w.opts.timeout_ms = -1;
    CHECK(pthread_create(&t, NULL, waiter_thread, &w) == 0, "pthread_create");
    CHECK(RUN((char *)lockctl, "release", "--path", (char *)paths[0], "--no-legacy") == 0,
          "lockctl release");
    pthread_join(t, NULL);
    CHECK(w.result == UL_OK, "waiting acquire: %s: %s", ul_result_name(w.result), w.message);
    CHECK(exists(paths[0]) && strstr(slurp(paths[0]), "program=c-tests") != NULL,
          "our record must be in place");
    CHECK_RESULT(ul_release(w.lock), UL_OK);
}

/* What on_wait saw. */
struct wait_seen {
    int calls;
    char path[512];
    char state[64];
    char message[1024];
    uint64_t waited_ms;
};

static void on_wait_record(const ul_wait_info *info, void *data)
{
    struct wait_seen *s = data;
    s->calls++;
    snprintf(s->path, sizeof s->path, "%s", info->path);
    snprintf(s->state, sizeof s->state, "%s", info->state);
    snprintf(s->message, sizeof s->message, "%s", info->message);
    s->waited_ms = info->waited_ms;
}

/* on_wait says who holds the lock when the wait starts (then every 10 s). */
static void test_on_wait_says_who_holds_it(void)
{
    const char *paths[1];
    ul_options o;
    ul_lock *lock = NULL;
    struct wait_seen seen;
    make_svc();
    paths[0] = in_svc("updates.lock");
    o = opts_for(paths, 1);
    memset(&seen, 0, sizeof seen);
    CHECK(RUN((char *)lockctl, "acquire", "--path", (char *)paths[0], "--no-legacy") == 0,
          "lockctl acquire");
    o.timeout_ms = 300;
    o.on_wait = on_wait_record;
    o.on_wait_data = &seen;
    CHECK_RESULT(ul_acquire(&o, &lock), UL_ERR_TIMEOUT);
    CHECK(seen.calls == 1, "once when the wait starts, got %d", seen.calls);
    CHECK(strcmp(seen.path, paths[0]) == 0, "path %s", seen.path);
    CHECK(strcmp(seen.state, "held-by-app") == 0, "state %s", seen.state);
    CHECK(strstr(seen.message, "waiting for ") == seen.message &&
              strstr(seen.message, "held by another app") != NULL,
          "message %s", seen.message);
    CHECK(seen.waited_ms < 300, "waited %llu ms", (unsigned long long)seen.waited_ms);
    /* Not waiting (try once): not called. */
    o.timeout_ms = 0;
    CHECK_RESULT(ul_acquire(&o, &lock), UL_ERR_HELD);
    CHECK(seen.calls == 1, "called without a wait");
    CHECK(RUN((char *)lockctl, "release", "--path", (char *)paths[0], "--no-legacy") == 0,
          "lockctl release");
}

static void test_held_by_lockctl_run(void)
{
    const char *paths[1];
    ul_options o;
    ul_lock *lock = NULL;
    int in[2], out[2];
    char line[64];
    ssize_t n;
    pid_t pid;
    make_svc();
    paths[0] = in_svc("updates.lock");
    o = opts_for(paths, 1);

    CHECK(pipe2(in, O_CLOEXEC) == 0 && pipe2(out, O_CLOEXEC) == 0, "pipes");
    pid = fork();
    CHECK(pid >= 0, "fork");
    if (pid == 0) {
        dup2(in[0], 0);
        dup2(out[1], 1);
        execl(lockctl, lockctl, "run", "--path", paths[0], "--no-legacy", "--", "sh", "-c",
              "echo ready; read x", (char *)NULL);
        _exit(127);
    }
    close(in[0]);
    close(out[1]);
    n = read(out[0], line, sizeof line - 1);
    line[n > 0 ? n : 0] = '\0';
    CHECK(strcmp(line, "ready\n") == 0, "readiness line: '%s'", line);

    CHECK_RESULT(ul_try_acquire(&o, &lock), UL_ERR_HELD);
    CHECK_MESSAGE_HAS("held by another app");
    CHECK(reboot_probe(paths[0]) == 1, "reboot probe must fail while lockctl run holds it");
    CHECK(supervisor_lockfile(paths[0]) == 73, "Supervisor must see lockctl's lock");

    CHECK(write(in[1], "\n", 1) == 1, "write");
    close(in[1]);
    close(out[0]);
    CHECK(wait_child(pid) == 0, "lockctl run exit status");
    CHECK(!exists(paths[0]), "lockctl run left its lock behind");
    CHECK_RESULT(ul_try_acquire(&o, &lock), UL_OK);
    CHECK_RESULT(ul_release(lock), UL_OK);
}

static void test_lockctl_sees_our_lock(void)
{
    const char *paths[1];
    ul_options o;
    ul_lock *lock = NULL;
    int status = 0;
    const char *json;
    make_svc();
    paths[0] = in_svc("updates.lock");
    o = opts_for(paths, 1);

    CHECK_RESULT(ul_acquire(&o, &lock), UL_OK);
    CHECK(RUN((char *)lockctl, "run", "--no-wait", "--path", (char *)paths[0], "--no-legacy",
              "--", "true") == 73,
          "lockctl run must exit 73 while we hold the lock");
    json = run_capture(&status, (char *const[]){(char *)lockctl, "status", "--json", "--path",
                                                 (char *)paths[0], NULL});
    CHECK(strstr(json, "\"state\": \"held-by-app\"") != NULL ||
              strstr(json, "\"state\":\"held-by-app\"") != NULL,
          "lockctl status: %s", json);
    CHECK(strstr(json, "c-tests") != NULL, "our program name in lockctl status: %s", json);
    CHECK_RESULT(ul_release(lock), UL_OK);
    CHECK(RUN((char *)lockctl, "run", "--no-wait", "--path", (char *)paths[0], "--no-legacy",
              "--", "true") == 0,
          "lockctl run must succeed after release");
}

static void test_stale_lock_reclaimed_only_when_allowed(void)
{
    const char *paths[1];
    ul_options o;
    ul_lock *lock = NULL;
    pid_t pid;
    ul_holder h;
    char strings[2048];
    make_svc();
    paths[0] = in_svc("updates.lock");
    o = opts_for(paths, 1);

    /* A holder that dies without releasing: the file stays, its flock dies. */
    pid = fork();
    CHECK(pid >= 0, "fork");
    if (pid == 0) {
        ul_lock *l = NULL;
        o.program = "dead-holder";
        _exit(ul_acquire(&o, &l) == UL_OK ? 0 : 1);
    }
    CHECK(wait_child(pid) == 0, "child could not take the lock");
    CHECK(exists(paths[0]), "the dead holder's file must still exist");
    CHECK(reboot_probe(paths[0]) == 0, "nobody holds the flock of a dead holder");

    o.reclaim_stale = false;
    o.timeout_ms = 0;
    CHECK_RESULT(ul_acquire(&o, &lock), UL_ERR_HELD);
    CHECK_MESSAGE_HAS("dead holder");
    CHECK_RESULT(ul_last_error_holder(&h, strings, sizeof strings, NULL), UL_OK);
    CHECK(h.state == UL_STATE_STALE && h.has_record, "state %s", ul_state_name(h.state));
    CHECK(h.has_owner_uid && h.owner_uid == h.record.uid && !h.flock_held, "stale owner %u",
          h.owner_uid);
    CHECK(h.record.pid == pid, "stale pid %d, want %d", h.record.pid, (int)pid);
    CHECK(strcmp(h.record.program, "dead-holder") == 0, "program %s", h.record.program);
    CHECK(exists(paths[0]), "nothing may be deleted without reclaim");

    o.reclaim_stale = true;
    CHECK_RESULT(ul_acquire(&o, &lock), UL_OK);
    CHECK(strstr(slurp(paths[0]), "program=c-tests") != NULL, "our record after reclaim");
    CHECK_RESULT(ul_release(lock), UL_OK);
}

static void test_fork_child_never_releases_the_parent_lock(void)
{
    const char *paths[1];
    ul_options o;
    ul_lock *lock = NULL;
    pid_t pid;
    make_svc();
    paths[0] = in_svc("updates.lock");
    o = opts_for(paths, 1);

    CHECK_RESULT(ul_acquire(&o, &lock), UL_OK);
    pid = fork();
    CHECK(pid >= 0, "fork");
    if (pid == 0) {
        /* exit codes: 10 check, 11 is_held, 12 release, 13 fd */
        if (ul_check(lock) != UL_ERR_NOT_HELD)
            _exit(10);
        if (ul_is_held(lock))
            _exit(11);
        if (ul_lock_fd(lock, 0) != -1)
            _exit(13);
        if (ul_release(lock) != UL_OK)
            _exit(12);
        _exit(0);
    }
    {
        int st = wait_child(pid);
        CHECK(st == 0, "child saw wrong results (exit %d)", st);
    }
    CHECK(exists(paths[0]), "the child deleted the parent's lock");
    CHECK_RESULT(ul_check(lock), UL_OK);
    CHECK(reboot_probe(paths[0]) == 1, "the parent's flock must survive the child");
    CHECK_RESULT(ul_release(lock), UL_OK);
    CHECK(!exists(paths[0]), "released");
}

static void test_lost_lock_is_reported_and_never_deleted(void)
{
    const char *paths[1];
    ul_options o;
    ul_lock *lock = NULL;
    make_svc();
    paths[0] = in_svc("updates.lock");
    o = opts_for(paths, 1);

    /* Deleted under us (the Supervisor's lock override). */
    CHECK_RESULT(ul_acquire(&o, &lock), UL_OK);
    CHECK(unlink(paths[0]) == 0, "unlink");
    CHECK_RESULT(ul_check(lock), UL_ERR_LOST);
    CHECK_MESSAGE_HAS("lost the update lock");
    CHECK_MESSAGE_HAS("was deleted");
    CHECK_RESULT(ul_release(lock), UL_ERR_LOST); /* the handle is freed anyway */

    /* Replaced by the Supervisor's own lock: reported, and its file left alone. */
    CHECK_RESULT(ul_acquire(&o, &lock), UL_OK);
    CHECK(unlink(paths[0]) == 0, "unlink");
    CHECK(supervisor_lockfile(paths[0]) == 0, "supervisor lockfile");
    CHECK_RESULT(ul_release(lock), UL_ERR_LOST);
    CHECK_MESSAGE_HAS("now belongs to the Supervisor");
    CHECK(exists(paths[0]) && owner_of(paths[0]) == 65534, "the Supervisor's lock was deleted");
    unlink(paths[0]);
}

/* Run `fn` in a child process with the given uid/gid; returns the child's exit status. */
static int as_user(uid_t uid, gid_t gid, int (*fn)(void))
{
    pid_t pid = fork();
    if (pid < 0)
        return -1;
    if (pid == 0) {
        if (setgroups(0, NULL) != 0 || setresgid(gid, gid, gid) != 0 ||
            setresuid(uid, uid, uid) != 0)
            _exit(99);
        _exit(fn());
    }
    return wait_child(pid);
}

static int expect_in_child(ul_result want, const char *needle)
{
    const char *paths[1];
    ul_options o;
    ul_lock *lock = NULL;
    ul_result r;
    paths[0] = in_svc("updates.lock");
    o = opts_for(paths, 1);
    r = ul_try_acquire(&o, &lock);
    if (r != want) {
        fprintf(stderr, "    child: got %s: %s\n", ul_result_name(r), last_message());
        return 1;
    }
    if (strstr(last_message(), needle) == NULL) {
        fprintf(stderr, "    child: message lacks '%s': %s\n", needle, last_message());
        return 2;
    }
    return lock == NULL ? 0 : 3;
}

static int child_permission(void)
{
    return expect_in_child(UL_ERR_PERMISSION, "permission denied");
}

static int child_supervisor_uid(void)
{
    return expect_in_child(UL_ERR_SUPERVISOR_UID, "65534");
}

static void test_permission_and_supervisor_uid(void)
{
    make_svc();
    /* A directory uid 1000 may not write to. */
    CHECK(chmod(svc, 0755) == 0, "chmod");
    CHECK(as_user(1000, 1000, child_permission) == 0, "uid 1000 must get UL_ERR_PERMISSION");
    CHECK(!exists(in_svc("updates.lock")), "nothing may be created");
    CHECK(chmod(svc, 01777) == 0, "chmod");
    /* Running as the Supervisor's uid is refused before anything is created. */
    CHECK(as_user(65534, 65534, child_supervisor_uid) == 0,
          "uid 65534 must get UL_ERR_SUPERVISOR_UID");
    CHECK(!exists(in_svc("updates.lock")), "nothing may be created as 65534");
}

static void test_invalid_paths_delete_nothing(void)
{
    char bad_utf8[600], trailing[600], missing[600];
    const char *cases[4];
    const char *needles[4] = {"empty", "UTF-8", "does not name a file", "does not exist"};
    const char *keep;
    size_t i;
    int fd;
    make_svc();
    keep = in_svc("keep.txt");
    fd = open(keep, O_CREAT | O_WRONLY | O_CLOEXEC, 0644);
    CHECK(fd >= 0 && write(fd, "data", 4) == 4, "create keep.txt");
    close(fd);
    snprintf(bad_utf8, sizeof bad_utf8, "%s/\xff\xfe.lock", svc);
    snprintf(trailing, sizeof trailing, "%s/", svc);
    snprintf(missing, sizeof missing, "%s/no-such-dir/updates.lock", svc);
    cases[0] = "";
    cases[1] = bad_utf8;
    cases[2] = trailing;
    cases[3] = missing;
    for (i = 0; i < 4; i++) {
        const char *paths[1];
        ul_options o;
        ul_lock *lock = (ul_lock *)&o; /* must be reset to NULL */
        paths[0] = cases[i];
        o = opts_for(paths, 1);
        o.create_dir = false;
        CHECK_RESULT(ul_acquire(&o, &lock), UL_ERR_INVALID_PATH);
        CHECK(lock == NULL, "*out not reset");
        CHECK_MESSAGE_HAS(needles[i]);
        CHECK_MESSAGE_HAS("invalid lock path");
    }
    CHECK(strcmp(slurp(keep), "data") == 0, "keep.txt changed");
    CHECK(!exists(missing), "the missing directory must not be created");
}

static int child_out_of_fds(void)
{
    const char *paths[1];
    ul_options o;
    ul_lock *lock = NULL;
    ul_cancel_token *tok = NULL;
    struct rlimit rl;
    ul_result r;
    int fd;
    paths[0] = in_svc("updates.lock");
    o = opts_for(paths, 1);
    /* Use up every descriptor below the limit. */
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0)
        return 10;
    rl.rlim_cur = 64;
    if (setrlimit(RLIMIT_NOFILE, &rl) != 0) {
        perror("    child: setrlimit");
        return 11;
    }
    while ((fd = open("/dev/null", O_RDONLY | O_CLOEXEC)) >= 0)
        ;
    r = ul_try_acquire(&o, &lock);
    if (r != UL_ERR_IO) {
        fprintf(stderr, "    child: acquire got %s: %s\n", ul_result_name(r), last_message());
        return 1;
    }
    if (strstr(last_message(), "out of file descriptors") == NULL) {
        fprintf(stderr, "    child: message: %s\n", last_message());
        return 2;
    }
    r = ul_cancel_token_new(&tok);
    if (r != UL_ERR_IO || tok != NULL) {
        fprintf(stderr, "    child: token got %s\n", ul_result_name(r));
        return 3;
    }
    return 0;
}

static void test_io_error_out_of_descriptors(void)
{
    pid_t pid;
    make_svc();
    pid = fork();
    CHECK(pid >= 0, "fork");
    if (pid == 0)
        _exit(child_out_of_fds());
    {
        int st = wait_child(pid);
        CHECK(st == 0, "out of descriptors must give UL_ERR_IO (child exit %d)", st);
    }
    CHECK(!exists(in_svc("updates.lock")), "nothing may be left behind");
}

static ul_cancel_token *signal_token;

static void on_sigusr1(int sig)
{
    (void)sig;
    ul_cancel_token_cancel(signal_token); /* async-signal-safe */
}

static void *cancel_later(void *arg)
{
    ul_cancel_token_cancel((const ul_cancel_token *)arg);
    return NULL;
}

static void *signal_main(void *arg)
{
    pthread_kill(*(pthread_t *)arg, SIGUSR1);
    return NULL;
}

struct acquisition {
    const ul_options *opts;
    ul_lock *lock;
    ul_result rc;
};

static void *acquire_thread(void *arg)
{
    struct acquisition *a = arg;
    a->rc = ul_acquire(a->opts, &a->lock);
    return NULL;
}

/* ul_acquire on a thread of its own (whose handle any thread may use and release). */
static ul_result acquire_on_another_thread(const ul_options *o, ul_lock **out)
{
    struct acquisition a = {o, NULL, UL_ERR_PANIC};
    pthread_t t;
    if (pthread_create(&t, NULL, acquire_thread, &a) != 0)
        return UL_ERR_PANIC;
    pthread_join(t, NULL);
    *out = a.lock;
    return a.rc;
}

static void test_cancel_from_thread_and_signal_handler(void)
{
    const char *paths[1];
    ul_options o;
    ul_lock *first = NULL, *second = NULL;
    ul_cancel_token *tok = NULL;
    pthread_t t, self = pthread_self();
    struct sigaction sa;
    make_svc();
    paths[0] = in_svc("updates.lock");
    o = opts_for(paths, 1);

    /* Held by another thread of this process: a second acquisition waits for it (the same
     * thread would get UL_ERR_ALREADY_HELD at once). */
    CHECK_RESULT(acquire_on_another_thread(&o, &first), UL_OK);
    CHECK_RESULT(ul_cancel_token_new(&tok), UL_OK);
    CHECK(!ul_cancel_token_is_cancelled(tok), "new token is cancelled");
    o.cancel = tok;
    o.timeout_ms = -1;
    CHECK(pthread_create(&t, NULL, cancel_later, tok) == 0, "pthread_create");
    CHECK_RESULT(ul_acquire(&o, &second), UL_ERR_CANCELLED);
    pthread_join(t, NULL);
    CHECK(second == NULL, "*out must be NULL");
    CHECK_MESSAGE_HAS("was cancelled");
    CHECK(ul_cancel_token_is_cancelled(tok), "token must stay cancelled");
    ul_cancel_token_free(tok);
    tok = NULL;

    /* From a signal handler, while the main thread waits. */
    CHECK_RESULT(ul_cancel_token_new(&signal_token), UL_OK);
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_sigusr1;
    sigemptyset(&sa.sa_mask);
    CHECK(sigaction(SIGUSR1, &sa, NULL) == 0, "sigaction");
    o.cancel = signal_token;
    CHECK(pthread_create(&t, NULL, signal_main, &self) == 0, "pthread_create");
    CHECK_RESULT(ul_acquire(&o, &second), UL_ERR_CANCELLED);
    pthread_join(t, NULL);
    signal(SIGUSR1, SIG_DFL);
    ul_cancel_token_free(signal_token);
    signal_token = NULL;

    /* Nothing was taken: the first handle still holds its lock. */
    CHECK_RESULT(ul_check(first), UL_OK);
    CHECK_RESULT(ul_release(first), UL_OK);
    ul_cancel_token_cancel(NULL);
    ul_cancel_token_free(NULL);
    CHECK(!ul_cancel_token_is_cancelled(NULL), "NULL token");
}

static void test_null_arguments(void)
{
    const char *paths[2] = {NULL, NULL};
    ul_options o = opts_for(NULL, 0);
    ul_lock *lock = NULL;
    ul_status_report rep;
    ul_handover_options h;
    char buf[16];

    CHECK_RESULT(ul_acquire(NULL, &lock), UL_ERR_NULL_ARGUMENT);
    CHECK_MESSAGE_HAS("`opts` is NULL");
    CHECK_RESULT(ul_acquire(&o, NULL), UL_ERR_NULL_ARGUMENT);
    CHECK_MESSAGE_HAS("`out` is NULL");
    CHECK_RESULT(ul_try_acquire(NULL, &lock), UL_ERR_NULL_ARGUMENT);
    CHECK_RESULT(ul_try_acquire(&o, NULL), UL_ERR_NULL_ARGUMENT);
    /* A path list pointer NULL with a count, or a NULL entry. */
    o.paths = NULL;
    o.path_count = 1;
    CHECK_RESULT(ul_acquire(&o, &lock), UL_ERR_NULL_ARGUMENT);
    CHECK_MESSAGE_HAS("opts->paths");
    o.paths = paths;
    paths[0] = "/tmp/x-never-created/updates.lock";
    o.path_count = 2;
    CHECK_RESULT(ul_acquire(&o, &lock), UL_ERR_NULL_ARGUMENT);
    CHECK_MESSAGE_HAS("opts->paths[1]");
    CHECK(!exists("/tmp/x-never-created"), "nothing may be created");

    CHECK_RESULT(ul_release(NULL), UL_OK); /* NULL-safe */
    CHECK_RESULT(ul_check(NULL), UL_ERR_NULL_ARGUMENT);
    CHECK(!ul_is_held(NULL), "ul_is_held(NULL)");
    CHECK(ul_lock_path_count(NULL) == 0, "ul_lock_path_count(NULL)");
    CHECK(ul_lock_path(NULL, 0) == NULL, "ul_lock_path(NULL)");
    CHECK(ul_lock_fd(NULL, 0) == -1, "ul_lock_fd(NULL)");
    CHECK_RESULT(ul_options_init(NULL, sizeof o), UL_ERR_NULL_ARGUMENT);
    CHECK_RESULT(ul_handover_options_init(NULL, sizeof h), UL_ERR_NULL_ARGUMENT);
    CHECK_RESULT(ul_status_report_init(NULL, sizeof rep), UL_ERR_NULL_ARGUMENT);
    CHECK_RESULT(ul_handover_complete(NULL, NULL), UL_ERR_NULL_ARGUMENT);
    CHECK_RESULT(ul_cancel_token_new(NULL), UL_ERR_NULL_ARGUMENT);

    o = opts_for(NULL, 0);
    CHECK_RESULT(ul_handover_options_init(&h, sizeof h), UL_OK);
    CHECK_RESULT(ul_status_report_init(&rep, sizeof rep), UL_OK);
    CHECK_RESULT(ul_status(NULL, &h, &rep), UL_ERR_NULL_ARGUMENT);
    CHECK_MESSAGE_HAS("`locks` is NULL");
    CHECK_RESULT(ul_status(&o, &h, NULL), UL_ERR_NULL_ARGUMENT);
    CHECK_MESSAGE_HAS("`report` is NULL");
    rep.lock_capacity = 4; /* with rep.locks NULL */
    CHECK_RESULT(ul_status(&o, &h, &rep), UL_ERR_NULL_ARGUMENT);
    CHECK_MESSAGE_HAS("report->locks");
    /* The error query functions take NULL too and never change the last error. */
    CHECK(ul_last_error_message(NULL, 0) > 0, "length query");
    CHECK(ul_last_error_message(NULL, sizeof buf) > 0, "NULL buffer with a length");
    CHECK(ul_last_error_path(NULL, 0) == 0, "no path for a NULL-argument error");
    CHECK(ul_last_error_holder(NULL, buf, sizeof buf, NULL) == UL_ERR_NULL_ARGUMENT, "holder");
    CHECK(ul_last_error_code() == UL_ERR_NULL_ARGUMENT, "the last error changed");
}

static void test_invalid_arguments(void)
{
    const char *paths[1];
    ul_options o;
    ul_lock *lock = NULL;
    ul_handover_options h;
    ul_status_report rep;
    make_svc();
    paths[0] = in_svc("updates.lock");
    o = opts_for(paths, 1);

    o.program = "\xff\xfe not utf-8";
    CHECK_RESULT(ul_acquire(&o, &lock), UL_ERR_INVALID_ARGUMENT);
    CHECK_MESSAGE_HAS("opts->program is not valid UTF-8");
    CHECK(!exists(paths[0]), "nothing may be created");

    o = opts_for(paths, 1);
    o.struct_size = 8; /* an uninitialised or older struct */
    CHECK_RESULT(ul_acquire(&o, &lock), UL_ERR_INVALID_ARGUMENT);
    CHECK_MESSAGE_HAS("ul_options_init");
    o.struct_size = 0;
    CHECK_RESULT(ul_try_acquire(&o, &lock), UL_ERR_INVALID_ARGUMENT);

    o = opts_for(paths, 1);
    CHECK_RESULT(ul_handover_options_init(&h, sizeof h), UL_OK);
    h.struct_size = 1;
    CHECK_RESULT(ul_handover_complete(&h, NULL), UL_ERR_INVALID_ARGUMENT);
    CHECK_RESULT(ul_status_report_init(&rep, sizeof rep - 1), UL_ERR_INVALID_ARGUMENT);
    CHECK_RESULT(ul_status_report_init(&rep, sizeof rep), UL_OK);
    CHECK_RESULT(ul_handover_options_init(&h, sizeof h), UL_OK);
    rep.struct_size = 16;
    CHECK_RESULT(ul_status(&o, &h, &rep), UL_ERR_INVALID_ARGUMENT);
    CHECK_MESSAGE_HAS("ul_status_report_init");
}

static void test_panic_is_caught_at_the_boundary(void)
{
    CHECK_RESULT(ul_debug_panic(), UL_ERR_PANIC);
    CHECK_MESSAGE_HAS("deliberate panic");
    CHECK_MESSAGE_HAS("bug in update-lock");
    /* The library keeps working. */
    CHECK_RESULT(ul_check(NULL), UL_ERR_NULL_ARGUMENT);
}

static void *error_in_thread(void *arg)
{
    int *code = arg;
    *code = (int)ul_last_error_code();
    return NULL;
}

static void test_error_message_buffer_edges(void)
{
    char path[600];
    const char *paths[1];
    ul_options o;
    ul_lock *lock = NULL;
    char full[4096], buf[4200];
    size_t need, len;
    pthread_t t;
    int thread_code = -1;
    make_svc();
    /* A message with multi-byte characters (é is 2 bytes). */
    snprintf(path, sizeof path, "%s/\xc3\xa9\xc3\xa9\xc3\xa9/", svc);
    paths[0] = path;
    o = opts_for(paths, 1);
    CHECK_RESULT(ul_acquire(&o, &lock), UL_ERR_INVALID_PATH);

    need = ul_last_error_message(NULL, 0);
    CHECK(need > 20 && need < sizeof full, "length %zu", need);
    CHECK(ul_last_error_message(full, sizeof full) == need, "same length");
    CHECK(strlen(full) == need, "full copy has strlen %zu, want %zu", strlen(full), need);
    CHECK(strstr(full, "\xc3\xa9\xc3\xa9\xc3\xa9") != NULL, "multi-byte path in message");

    for (len = 1; len <= need + 2; len++) {
        size_t got, n;
        memset(buf, '#', sizeof buf);
        got = ul_last_error_message(buf, len);
        CHECK(got == need, "len %zu: returned %zu", len, got);
        n = strlen(buf);
        CHECK(n < len, "len %zu: not NUL-terminated inside the buffer", len);
        CHECK(memcmp(buf, full, n) == 0, "len %zu: not a prefix", len);
        CHECK(n == need || ((unsigned char)full[n] & 0xC0) != 0x80,
              "len %zu: cut inside a UTF-8 character", len);
        CHECK(n == need || n + 2 >= len, "len %zu: cut %zu bytes, too short", len, n);
        CHECK(buf[len] == '#', "len %zu: wrote past the buffer", len);
    }
    /* len 0 with a buffer: nothing written. */
    buf[0] = '#';
    CHECK(ul_last_error_message(buf, 0) == need && buf[0] == '#', "len 0 wrote");

    /* Per thread: another thread has no error. */
    CHECK(pthread_create(&t, NULL, error_in_thread, &thread_code) == 0, "pthread_create");
    pthread_join(t, NULL);
    CHECK(thread_code == UL_OK, "other thread sees %d", thread_code);

    /* A successful call clears it. */
    CHECK_RESULT(ul_options_init(&o, sizeof o), UL_OK);
    CHECK(ul_last_error_code() == UL_OK, "not cleared");
    buf[0] = '#';
    CHECK(ul_last_error_message(buf, sizeof buf) == 0 && buf[0] == '\0', "message not empty");
}

/* Hardening G, in a child of uid 1000 that owns a private directory and then makes it
 * unsearchable (mode 0): status says UL_STATE_UNKNOWN, release says UL_ERR_UNKNOWN and
 * deletes nothing. */
static char unknown_dir[700];

static int child_unknown_when_it_cannot_look(void)
{
    char lockp[800];
    const char *paths[1];
    ul_options o;
    ul_handover_options h;
    ul_lock *lock = NULL;
    ul_status_report rep;
    ul_path_status locks[1];
    ul_handover_status ho[2];
    static char strings[8192];
    struct stat st;
    ul_result r;
    int rc;
    snprintf(lockp, sizeof lockp, "%s/updates.lock", unknown_dir);
    paths[0] = lockp;
    o = opts_for(paths, 1);
    if (ul_acquire(&o, &lock) != UL_OK)
        return 10;
    if (chmod(unknown_dir, 0) != 0)
        return 11;
    rc = 0;
    if (ul_handover_options_init(&h, sizeof h) != UL_OK ||
        ul_status_report_init(&rep, sizeof rep) != UL_OK)
        rc = 12;
    rep.locks = locks;
    rep.lock_capacity = 1;
    rep.handover = ho;
    rep.handover_capacity = 2;
    rep.strings = strings;
    rep.strings_capacity = sizeof strings;
    if (rc == 0 && ul_status(&o, &h, &rep) != UL_OK) {
        fprintf(stderr, "    child: status failed: %s\n", last_message());
        rc = 13;
    }
    if (rc == 0 && (locks[0].state != UL_STATE_UNKNOWN || locks[0].error == NULL ||
                    strstr(locks[0].error, "ermission denied") == NULL ||
                    strcmp(ul_state_name(locks[0].state), "unknown") != 0)) {
        fprintf(stderr, "    child: state %s, error %s\n", ul_state_name(locks[0].state),
                locks[0].error ? locks[0].error : "(null)");
        rc = 14;
    }
    r = ul_release(lock); /* frees the handle whatever it returns */
    if (rc != 0)
        return rc;
    if (r != UL_ERR_UNKNOWN || strstr(last_message(), "could not check the update lock") == NULL ||
        strstr(last_message(), "nothing was deleted") == NULL) {
        fprintf(stderr, "    child: release gave %s: %s\n", ul_result_name(r), last_message());
        return 15;
    }
    if (chmod(unknown_dir, 01777) != 0)
        return 16;
    if (lstat(lockp, &st) != 0 || st.st_uid != 1000)
        return 17; /* the lock file must still be there */
    return 0;
}

static void test_unknown_when_it_cannot_look(void)
{
    int rc;
    make_svc();
    snprintf(unknown_dir, sizeof unknown_dir, "%s", in_svc("private"));
    CHECK(mkdir(unknown_dir, 01777) == 0 && chown(unknown_dir, 1000, 1000) == 0, "private dir");
    rc = as_user(1000, 1000, child_unknown_when_it_cannot_look);
    CHECK(rc == 0, "child failed with %d", rc);
}

static void test_status_reports_every_state(void)
{
    const char *paths[6];
    const char *hpaths[1];
    ul_options o;
    ul_handover_options h;
    ul_lock *lock = NULL;
    ul_status_report rep;
    ul_path_status locks[6];
    ul_handover_status ho[2];
    static char strings[32768];
    size_t needed;
    int fd;
    make_svc();
    paths[0] = in_svc("free.lock");
    paths[1] = in_svc("updates.lock");     /* held by us */
    paths[2] = in_svc("supervisor.lock");  /* lockfile as 65534 */
    paths[3] = in_svc("touched.lock");     /* empty file */
    paths[4] = in_svc("dir.lock");         /* directory */
    paths[5] = in_svc("link.lock");        /* symlink */
    hpaths[0] = in_svc("handover-complete");

    {
        ul_options mine = opts_for(&paths[1], 1);
        CHECK_RESULT(ul_acquire(&mine, &lock), UL_OK);
    }
    CHECK(supervisor_lockfile(paths[2]) == 0, "supervisor lockfile");
    fd = open(paths[3], O_CREAT | O_WRONLY | O_CLOEXEC, 0644);
    CHECK(fd >= 0, "touch");
    close(fd);
    CHECK(mkdir(paths[4], 0755) == 0, "mkdir");
    CHECK(symlink("/nonexistent/target", paths[5]) == 0, "symlink");

    o = opts_for(paths, 6);
    CHECK_RESULT(ul_handover_options_init(&h, sizeof h), UL_OK);
    h.paths = hpaths;
    h.path_count = 1;
    CHECK_RESULT(ul_status_report_init(&rep, sizeof rep), UL_OK);

    /* Size query. */
    CHECK_RESULT(ul_status(&o, &h, &rep), UL_ERR_BUFFER_TOO_SMALL);
    CHECK_MESSAGE_HAS("needs 6 lock entries, 1 hand-over entries");
    CHECK(rep.lock_count == 6 && rep.handover_count == 1, "counts %zu %zu", rep.lock_count,
          rep.handover_count);
    CHECK(rep.strings_needed > 0 && rep.strings_needed < sizeof strings, "needed %zu",
          rep.strings_needed);
    needed = rep.strings_needed;

    /* One byte short, then exactly enough. */
    rep.locks = locks;
    rep.lock_capacity = 6;
    rep.handover = ho;
    rep.handover_capacity = 2;
    rep.strings = strings;
    rep.strings_capacity = needed - 1;
    CHECK_RESULT(ul_status(&o, &h, &rep), UL_ERR_BUFFER_TOO_SMALL);
    rep.lock_capacity = 5;
    rep.strings_capacity = needed;
    CHECK_RESULT(ul_status(&o, &h, &rep), UL_ERR_BUFFER_TOO_SMALL);
    rep.lock_capacity = 6;
    /* No hand-over options: the signal core chooses, beside the first lock path (as
     * `lockctl status` and every binding). */
    CHECK_RESULT(ul_status(&o, NULL, &rep), UL_OK);
    CHECK(rep.handover_count == 1 && strcmp(ho[0].path, hpaths[0]) == 0, "beside the first: %s",
          rep.handover_count ? ho[0].path : "(none)");
    memset(strings, '#', sizeof strings);
    CHECK_RESULT(ul_status(&o, &h, &rep), UL_OK);
    CHECK(strings[needed] == '#', "status wrote past strings_needed");
    CHECK(rep.schema == 1, "schema %u", rep.schema);
    CHECK(rep.blocks_app_updates && rep.blocks_host_reboot, "report flags");

    CHECK(strcmp(locks[0].path, paths[0]) == 0 && locks[0].state == UL_STATE_FREE, "free: %s",
          ul_state_name(locks[0].state));
    CHECK(!locks[0].blocks_app_updates && !locks[0].has_owner_uid && locks[0].error == NULL,
          "free flags");

    CHECK(locks[1].state == UL_STATE_HELD_BY_APP, "ours: %s", ul_state_name(locks[1].state));
    CHECK(locks[1].blocks_app_updates && locks[1].blocks_host_reboot && locks[1].flock_held,
          "ours flags");
    CHECK(locks[1].has_holder && locks[1].holder.same_process &&
              locks[1].holder.pid == getpid() && strcmp(locks[1].holder.program, "c-tests") == 0,
          "ours holder");
    CHECK(locks[1].has_owner_uid && locks[1].owner_uid == 0, "ours owner");

    CHECK(locks[2].state == UL_STATE_HELD_BY_SUPERVISOR, "supervisor: %s",
          ul_state_name(locks[2].state));
    CHECK(locks[2].blocks_app_updates && !locks[2].blocks_host_reboot && !locks[2].has_holder,
          "supervisor flags");
    CHECK(locks[2].owner_uid == 65534, "supervisor owner %u", locks[2].owner_uid);

    CHECK(locks[3].state == UL_STATE_FOREIGN && locks[3].foreign_kind == UL_FOREIGN_EMPTY_FILE,
          "touched: %s/%s", ul_state_name(locks[3].state),
          ul_foreign_kind_name(locks[3].foreign_kind));
    CHECK(locks[4].state == UL_STATE_FOREIGN && locks[4].foreign_kind == UL_FOREIGN_DIRECTORY,
          "dir: %s", ul_foreign_kind_name(locks[4].foreign_kind));
    CHECK(locks[5].state == UL_STATE_FOREIGN && locks[5].foreign_kind == UL_FOREIGN_SYMLINK,
          "link: %s", ul_foreign_kind_name(locks[5].foreign_kind));
    CHECK(locks[5].symlink_target != NULL &&
              strcmp(locks[5].symlink_target, "/nonexistent/target") == 0,
          "symlink target");
    CHECK(strstr(locks[5].message, "symbolic link") != NULL, "message: %s", locks[5].message);
    CHECK(strcmp(ho[0].path, hpaths[0]) == 0 && !ho[0].pending, "handover not pending");

    /* Status changed nothing. */
    CHECK(exists(paths[3]) && exists(paths[4]) && exists(paths[5]), "status deleted something");
    CHECK_RESULT(ul_release(lock), UL_OK);
    unlink(paths[2]);
    unlink(paths[3]);
    rmdir(paths[4]);
    unlink(paths[5]);
}

static void test_handover_complete(void)
{
    const char *hpaths[1];
    const char *bad[1];
    ul_handover_options h;
    ul_options o;
    ul_status_report rep;
    ul_path_status locks[2];
    ul_handover_status ho[1];
    char strings[4096];
    size_t written = 99;
    const char *lpaths[1];
    make_svc();
    hpaths[0] = in_svc("handover-complete");
    lpaths[0] = in_svc("updates.lock");

    CHECK_RESULT(ul_handover_options_init(&h, sizeof h), UL_OK);
    h.paths = hpaths;
    h.path_count = 1;
    CHECK_RESULT(ul_handover_complete(&h, &written), UL_OK);
    CHECK(written == 1, "written %zu", written);
    CHECK(strncmp(slurp(hpaths[0]), "update-lock handover v1\n", 24) == 0, "signal content: %s",
          slurp(hpaths[0]));
    CHECK_RESULT(ul_handover_complete(&h, NULL), UL_OK); /* idempotent */

    o = opts_for(lpaths, 1);
    CHECK_RESULT(ul_status_report_init(&rep, sizeof rep), UL_OK);
    rep.locks = locks;
    rep.lock_capacity = 2;
    rep.handover = ho;
    rep.handover_capacity = 1;
    rep.strings = strings;
    rep.strings_capacity = sizeof strings;
    CHECK_RESULT(ul_status(&o, &h, &rep), UL_OK);
    CHECK(rep.handover_count == 1 && ho[0].pending, "the signal must be pending");
    CHECK(!rep.blocks_app_updates, "nothing locked");

    /* A directory at the signal path: refused, and left alone. */
    bad[0] = in_svc("blocked-signal");
    CHECK(mkdir(bad[0], 0755) == 0, "mkdir");
    h.paths = bad;
    written = 99;
    CHECK_RESULT(ul_handover_complete(&h, &written), UL_ERR_INVALID_PATH);
    CHECK(written == 0, "written %zu on failure", written);
    CHECK_MESSAGE_HAS("a directory occupies the hand-over signal path");
    CHECK(exists(bad[0]), "the directory was removed");
    rmdir(bad[0]);
    unlink(hpaths[0]);
}

/* The holder buffer checks, on a thread other than the holder's (the last error is the
 * thread's own; the holder's own thread would get UL_ERR_ALREADY_HELD). */
static void holder_buffer_checks_on(const ul_options *o)
{
    ul_lock *second = NULL;
    ul_holder h;
    char small[8], big[2048];
    size_t needed = 0, needed2 = 0;
    CHECK_RESULT(ul_try_acquire(o, &second), UL_ERR_HELD);
    CHECK_MESSAGE_HAS("this same process");
    CHECK_RESULT(ul_last_error_holder(&h, small, sizeof small, &needed), UL_ERR_BUFFER_TOO_SMALL);
    CHECK(needed > sizeof small, "needed %zu", needed);
    CHECK_RESULT(ul_last_error_holder(&h, NULL, 0, &needed2), UL_ERR_BUFFER_TOO_SMALL);
    CHECK(needed2 == needed, "size query %zu vs %zu", needed2, needed);
    CHECK(ul_last_error_code() == UL_ERR_HELD, "the last error changed");
    CHECK_RESULT(ul_last_error_holder(&h, big, needed, NULL), UL_OK);
    CHECK(h.state == UL_STATE_HELD_BY_APP && h.record.same_process, "same process holder");
    CHECK(strcmp(h.record.program, "c-tests") == 0, "program %s", h.record.program);
    /* No holder after other errors. */
    CHECK_RESULT(ul_check(NULL), UL_ERR_NULL_ARGUMENT);
    CHECK_RESULT(ul_last_error_holder(&h, big, sizeof big, NULL), UL_OK);
    CHECK(h.state == UL_STATE_FREE && !h.has_record, "holder after a NULL-argument error");
}

static void *holder_buffer_checks(void *arg)
{
    holder_buffer_checks_on(arg);
    return NULL;
}

static void test_last_error_holder_buffer(void)
{
    const char *paths[1];
    ul_options o;
    ul_lock *first = NULL;
    pthread_t t;
    make_svc();
    paths[0] = in_svc("updates.lock");
    o = opts_for(paths, 1);
    CHECK_RESULT(ul_acquire(&o, &first), UL_OK);
    CHECK(pthread_create(&t, NULL, holder_buffer_checks, &o) == 0, "pthread_create");
    pthread_join(t, NULL);
    CHECK_RESULT(ul_release(first), UL_OK);
}

/* Shared mode: two holds in this thread and a `lockctl run --shared` hold at once, both
 * readers see it held, the last one out removes it. A nested exclusive acquisition by the
 * same thread fails at once with UL_ERR_ALREADY_HELD instead of waiting for itself. */
static void test_shared_holds_and_nested_acquire(void)
{
    const char *paths[1];
    ul_options o;
    ul_lock *a = NULL, *b = NULL, *c = NULL;
    make_svc();
    paths[0] = in_svc("updates.lock");
    o = opts_for(paths, 1);
    o.shared = true;
    o.timeout_ms = 0;
    CHECK_RESULT(ul_acquire(&o, &a), UL_OK);
    CHECK_RESULT(ul_acquire(&o, &b), UL_OK);
    CHECK(supervisor_lockfile(paths[0]) == 73, "the Supervisor must see it held");
    CHECK(reboot_probe(paths[0]) == 1, "the reboot must see a flock");
    CHECK(RUN((char *)lockctl, "run", "--shared", "--no-wait", "--path", (char *)paths[0], "--",
              "true") == 0,
          "lockctl run --shared must join");
    /* Exclusive in the thread that holds it shared: fails at once, whatever the timeout. */
    o.shared = false;
    o.timeout_ms = 5000;
    CHECK_RESULT(ul_acquire(&o, &c), UL_ERR_ALREADY_HELD);
    CHECK(strcmp(ul_result_name(UL_ERR_ALREADY_HELD), "already-held") == 0, "name");
    CHECK_MESSAGE_HAS("already held by this process");
    CHECK(c == NULL, "nothing taken");
    CHECK_RESULT(ul_release(a), UL_OK);
    CHECK(exists(paths[0]), "b is still inside");
    CHECK_RESULT(ul_release(b), UL_OK);
    CHECK(!exists(paths[0]), "the last one out removed it");
    /* Exclusive twice in one thread: the same. */
    CHECK_RESULT(ul_acquire(&o, &a), UL_OK);
    CHECK_RESULT(ul_acquire(&o, &c), UL_ERR_ALREADY_HELD);
    CHECK_MESSAGE_HAS("reuse the lock you hold");
    CHECK_RESULT(ul_release(a), UL_OK);
    CHECK(!exists(paths[0]), "released");
}

/* on_update_waiting: runs on the library's background thread; tells the test through a pipe. */
struct news {
    int pipe_w;
    int calls;
    char temp_name[256];
    char path[1024];
};

static void on_update_waiting(const ul_update_waiting_info *info, void *data)
{
    struct news *n = data;
    __atomic_fetch_add(&n->calls, 1, __ATOMIC_SEQ_CST);
    snprintf(n->temp_name, sizeof n->temp_name, "%s", info->temp_name);
    snprintf(n->path, sizeof n->path, "%s", info->path);
    if (write(n->pipe_w, "!", 1) != 1)
        perror("write news");
}

/* Wait (up to 30 s) for the callback's byte. */
static int news_arrived(int pipe_r)
{
    struct pollfd p = {pipe_r, POLLIN, 0};
    char c;
    if (poll(&p, 1, 30000) != 1)
        return 0;
    return read(pipe_r, &c, 1) == 1;
}

static void test_update_waiting_and_the_yield(void)
{
    const char *paths[1];
    ul_options o;
    ul_lock *lock = NULL, *again = NULL;
    struct news n;
    int fds[2];
    ul_holder h;
    char strings[2048];
    size_t needed = 0;
    make_svc();
    paths[0] = in_svc("updates.lock");
    CHECK(pipe(fds) == 0, "pipe");
    memset(&n, 0, sizeof n);
    n.pipe_w = fds[1];
    unsetenv("UPDATE_LOCK_YIELD_TO_UPDATES");
    o = opts_for(paths, 1);
    setenv("UPDATE_LOCK_YIELD_TO_UPDATES", "0", 1);
    CHECK(o.yield_to_updates_ms == 60000, "default yield %u", o.yield_to_updates_ms);
    o.on_update_waiting = on_update_waiting;
    o.on_update_waiting_data = &n;
    CHECK_RESULT(ul_acquire(&o, &lock), UL_OK);
    CHECK(!ul_lock_update_waiting(lock), "nobody tried yet");
    CHECK(supervisor_lockfile(paths[0]) == 73, "the Supervisor must see it held");
    CHECK(news_arrived(fds[0]), "the callback must tell of the Supervisor's attempt");
    CHECK(ul_lock_update_waiting(lock), "ul_lock_update_waiting after the attempt");
    CHECK(n.temp_name[0] == '_', "temp name %s", n.temp_name);
    CHECK(strcmp(n.path, paths[0]) == 0, "path %s", n.path);
    CHECK(!ul_lock_update_waiting(NULL), "NULL is not waited for");
    CHECK_RESULT(ul_release(lock), UL_OK);
    /* Free, but kept for the Supervisor: a try-once acquisition is told so. */
    o.timeout_ms = 0;
    CHECK_RESULT(ul_acquire(&o, &again), UL_ERR_HELD);
    CHECK_MESSAGE_HAS("kept for the balena Supervisor");
    CHECK_RESULT(ul_last_error_holder(&h, strings, sizeof strings, &needed), UL_OK);
    CHECK(h.state == UL_STATE_UPDATE_WAITING, "holder state %s", ul_state_name(h.state));
    CHECK(strcmp(ul_state_name(UL_STATE_UPDATE_WAITING), "update-waiting") == 0, "state name");
    CHECK(!exists(paths[0]), "a yield creates nothing");
    /* The Supervisor gets in and out; then nothing is yielded to any more. */
    CHECK(supervisor_lockfile(paths[0]) == 0, "the Supervisor gets in while the app yields");
    CHECK(RUN("setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "rm",
              (char *)paths[0]) == 0,
          "the Supervisor releases");
    o.timeout_ms = 5000;
    CHECK_RESULT(ul_acquire(&o, &again), UL_OK);
    CHECK(n.calls == 1, "one callback per hold: %d", n.calls);
    CHECK_RESULT(ul_release(again), UL_OK);
    /* yield_to_updates_ms = 0: never yields. */
    CHECK_RESULT(ul_acquire(&o, &lock), UL_OK);
    CHECK(supervisor_lockfile(paths[0]) == 73, "held");
    CHECK(news_arrived(fds[0]), "news for the new hold");
    CHECK_RESULT(ul_release(lock), UL_OK);
    o.timeout_ms = 0;
    o.yield_to_updates_ms = 0;
    CHECK_RESULT(ul_acquire(&o, &lock), UL_OK);
    CHECK_RESULT(ul_release(lock), UL_OK);
    close(fds[0]);
    close(fds[1]);
}

struct worker {
    const char *path;
    volatile int *inside;
    int violations;
    int failures;
};

static void *exclusion_worker(void *arg)
{
    struct worker *w = arg;
    const char *paths[1];
    ul_options o;
    int i;
    paths[0] = w->path;
    o = opts_for(paths, 1);
    for (i = 0; i < 15; i++) {
        ul_lock *lock = NULL;
        if (ul_acquire(&o, &lock) != UL_OK) {
            w->failures++;
            continue;
        }
        if (__atomic_fetch_add(w->inside, 1, __ATOMIC_SEQ_CST) != 0)
            w->violations++;
        __atomic_fetch_sub(w->inside, 1, __ATOMIC_SEQ_CST);
        if (ul_release(lock) != UL_OK)
            w->failures++;
    }
    return NULL;
}

static void test_threads_exclude_each_other(void)
{
    pthread_t t[3];
    struct worker w[3];
    volatile int inside = 0;
    int i;
    make_svc();
    for (i = 0; i < 3; i++) {
        w[i].path = in_svc("updates.lock");
        w[i].inside = &inside;
        w[i].violations = w[i].failures = 0;
        CHECK(pthread_create(&t[i], NULL, exclusion_worker, &w[i]) == 0, "pthread_create");
    }
    for (i = 0; i < 3; i++)
        pthread_join(t[i], NULL);
    for (i = 0; i < 3; i++)
        CHECK(w[i].violations == 0 && w[i].failures == 0, "worker %d: %d violations, %d failures",
              i, w[i].violations, w[i].failures);
    CHECK(!exists(in_svc("updates.lock")), "lock left behind");
}

/* ------------------------------------------------------------------------------------ */
/* Hand-over (issue 6): ul_handover_take / ul_handover_server_*, against a C old or new
 * version in another process (tests/handover_peer.c, $UL_HANDOVER_PEER) or a thread. */

/* Open descriptors of this process (the directory's own descriptor counts in every call). */
static int count_fds(void)
{
    int n = 0;
    struct dirent *e;
    DIR *d = opendir("/proc/self/fd");
    if (d == NULL)
        return -1;
    while ((e = readdir(d)) != NULL)
        if (e->d_name[0] != '.')
            n++;
    closedir(d);
    return n;
}

static ul_rendezvous_options rendezvous_for(const char *socket_path, const char *release)
{
    ul_rendezvous_options ro;
    if (ul_rendezvous_options_init(&ro, sizeof ro) != UL_OK) {
        fprintf(stderr, "ul_rendezvous_options_init failed\n");
        exit(2);
    }
    ro.socket = socket_path;
    ro.release = release;
    ro.step_timeout_ms = 10000;
    ro.release_timeout_ms = 20000;
    return ro;
}

#define CHECK_REASON(want)                                                                 \
    CHECK(ul_last_error_handover_reason() != NULL &&                                       \
              strcmp(ul_last_error_handover_reason(), (want)) == 0,                        \
          "hand-over reason %s, want %s",                                                  \
          ul_last_error_handover_reason() ? ul_last_error_handover_reason() : "(null)", (want))

/* A peer process (tests/handover_peer.c) with pipes to its stdin and from its stdout. */
struct peer {
    pid_t pid;
    int in;  /* its stdin (write end), -1 once closed */
    int out; /* its stdout (read end) */
};

static int spawn_peer(struct peer *p, char *const argv[])
{
    int in[2], out[2];
    if (pipe2(in, O_CLOEXEC) != 0)
        return -1;
    if (pipe2(out, O_CLOEXEC) != 0) {
        close(in[0]);
        close(in[1]);
        return -1;
    }
    p->pid = fork();
    if (p->pid == 0) {
        dup2(in[0], 0);
        dup2(out[1], 1);
        execv(argv[0], argv);
        _exit(127);
    }
    close(in[0]);
    close(out[1]);
    p->in = in[1];
    p->out = out[0];
    return p->pid > 0 ? 0 : -1;
}

/* Read one line from the peer (without the newline) within 30 s; 0 on success. */
static int peer_line(struct peer *p, char *buf, size_t size)
{
    size_t n = 0;
    while (n + 1 < size) {
        struct pollfd pfd;
        char c;
        ssize_t r;
        pfd.fd = p->out;
        pfd.events = POLLIN;
        if (poll(&pfd, 1, 30000) != 1)
            break;
        r = read(p->out, &c, 1);
        if (r < 0 && errno == EINTR)
            continue;
        if (r != 1)
            break;
        if (c == '\n') {
            buf[n] = '\0';
            return 0;
        }
        buf[n++] = c;
    }
    buf[n] = '\0';
    return -1;
}

/* Close the pipes and reap the peer (bounded: SIGKILL after 30 s). Its exit status. */
static int peer_finish(struct peer *p)
{
    int i, st = 0;
    if (p->in >= 0)
        close(p->in);
    p->in = -1;
    close(p->out);
    for (i = 0; i < 3000; i++) {
        pid_t r = waitpid(p->pid, &st, WNOHANG);
        if (r == p->pid)
            return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
        if (r < 0 && errno != EINTR)
            return -1;
        /* Polling a child's exit: bounded, not a synchronisation sleep. */
        poll(NULL, 0, 10);
    }
    kill(p->pid, SIGKILL);
    return wait_child(p->pid) == 128 + SIGKILL ? -2 : -1;
}

static const char *peer_program(void)
{
    const char *p = getenv("UL_HANDOVER_PEER");
    return p != NULL && access(p, X_OK) == 0 ? p : NULL;
}

/* A take-over running in a thread, its result and the thread's last error. */
struct take_job {
    ul_rendezvous_options ro;
    ul_inheritance *inh;
    ul_result rc;
    char reason[32];
    char message[2048];
};

static void *take_thread(void *arg)
{
    struct take_job *j = arg;
    const char *reason;
    j->rc = ul_handover_take(&j->ro, &j->inh);
    reason = ul_last_error_handover_reason();
    snprintf(j->reason, sizeof j->reason, "%s", reason ? reason : "");
    ul_last_error_message(j->message, sizeof j->message);
    return NULL;
}

static void test_handover_first_start_no_predecessor(void)
{
    ul_rendezvous_options ro;
    ul_inheritance *inh = (ul_inheritance *)&ro; /* must be overwritten with NULL */
    struct sockaddr_un sa;
    int fds_before = count_fds();
    int s;
    make_svc();

    /* Nobody serving, no socket file. */
    ro = rendezvous_for(in_svc("handover.sock"), "v1");
    CHECK_RESULT(ul_handover_take(&ro, &inh), UL_OK);
    CHECK(inh == NULL, "no predecessor must give NULL");
    CHECK(!exists(in_svc("handover-complete")), "no signal on a first start");

    /* The directory does not even exist. */
    ro.socket = "/tmp/ul-c-tests-no-such-dir/handover.sock";
    CHECK_RESULT(ul_handover_take(&ro, &inh), UL_OK);
    CHECK(inh == NULL, "missing directory");

    /* A stale socket left by a crashed old version: removed, still no predecessor. */
    s = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    CHECK(s >= 0, "socket");
    memset(&sa, 0, sizeof sa);
    sa.sun_family = AF_UNIX;
    snprintf(sa.sun_path, sizeof sa.sun_path, "%s", in_svc("handover.sock"));
    CHECK(bind(s, (struct sockaddr *)&sa, sizeof sa) == 0, "bind: %s", strerror(errno));
    close(s);
    CHECK(exists(in_svc("handover.sock")), "stale socket file");
    ro.socket = in_svc("handover.sock");
    CHECK_RESULT(ul_handover_take(&ro, &inh), UL_OK);
    CHECK(inh == NULL, "a stale socket is no predecessor");
    CHECK(!exists(in_svc("handover.sock")), "the stale socket must be removed");
    CHECK(count_fds() == fds_before, "descriptors leaked: %d before, %d after", fds_before,
          count_fds());
}

/* Hardening D: a hand-over server of another uid (a real `lockctl handover run` as uid
 * 1000) gets nothing from a root successor unless its uid is in peer_uids. */
static void test_listen_backlog_is_the_kernels_limit(void)
{
    FILE *f = fopen("/proc/sys/net/core/somaxconn", "r");
    unsigned n = 0;
    CHECK(f != NULL && fscanf(f, "%u", &n) == 1, "read somaxconn");
    if (f)
        fclose(f);
    CHECK(ul_listen_backlog() == n, "ul_listen_backlog() = %u, somaxconn %u", ul_listen_backlog(), n);
}

static void test_handover_peer_uids(void)
{
    ul_rendezvous_options ro;
    ul_inheritance *inh = NULL;
    uint32_t allowed[1] = {1000};
    int out[2];
    char line[16] = {0};
    pid_t pid;
    ssize_t n;
    make_svc();
    CHECK(pipe(out) == 0, "pipe");
    pid = fork();
    if (pid == 0) {
        dup2(out[1], 1);
        close(out[0]);
        execlp("setpriv", "setpriv", "--reuid=1000", "--regid=1000", "--clear-groups", lockctl,
               "handover", "run", "--socket", in_svc("handover.sock"), "--", "sh", "-c",
               "echo ready; exec sleep 60", (char *)NULL);
        _exit(127);
    }
    close(out[1]);
    n = read(out[0], line, sizeof line - 1); /* the server is bound once the app runs */
    CHECK(n > 0 && strncmp(line, "ready", 5) == 0, "server not ready: %s", line);

    ro = rendezvous_for(in_svc("handover.sock"), "v2");
    ro.signal = false;
    CHECK_RESULT(ul_handover_take(&ro, &inh), UL_ERR_HANDOVER);
    CHECK_REASON("uid");
    CHECK_MESSAGE_HAS("uid 1000");
    CHECK_MESSAGE_HAS("refusing to take anything from it");
    CHECK(inh == NULL, "nothing taken");

    ro.peer_uids = allowed;
    ro.peer_uid_count = 1;
    CHECK_RESULT(ul_handover_take(&ro, &inh), UL_OK);
    CHECK(inh != NULL && ul_inheritance_predecessor(inh)->uid == 1000, "took over from uid 1000");
    ul_inheritance_free(inh);
    kill(pid, SIGKILL);
    wait_child(pid);
    close(out[0]);
}

/* Both sides in this process: the server here, the successor in a thread. Every accessor. */
static void test_handover_state_and_descriptors_in_process(void)
{
    ul_rendezvous_options ro;
    ul_handover_server *server = NULL;
    ul_handover_request *req = NULL;
    const ul_peer_info *who = NULL, *succ, *pred;
    ul_handover_fd hfds[2];
    static struct take_job job; /* static: outlives the test if a CHECK returns early */
    pthread_t t;
    struct stat st;
    const unsigned char *state;
    size_t state_len = 99;
    static const char blob[] = "hello\0world"; /* binary: the NUL is part of the state */
    char buf[16], msg[64];
    int p[2], fd0, fd1, taken;
    int fds_before = count_fds();
    make_svc();

    ro = rendezvous_for(in_svc("handover.sock"), "v1");
    CHECK_RESULT(ul_handover_server_bind(&ro, &server), UL_OK);
    CHECK(server != NULL && ul_handover_server_is_serving(server), "serving");
    CHECK(strcmp(ul_handover_server_socket_path(server), in_svc("handover.sock")) == 0,
          "socket path %s", ul_handover_server_socket_path(server));
    CHECK(lstat(in_svc("handover.sock"), &st) == 0 && S_ISSOCK(st.st_mode) &&
              (st.st_mode & 0777) == 0600,
          "the socket must exist with mode 0600");
    CHECK(pipe2(p, O_CLOEXEC) == 0, "pipe");

    memset(&job, 0, sizeof job);
    job.ro = rendezvous_for(in_svc("handover.sock"), "v2");
    CHECK(pthread_create(&t, NULL, take_thread, &job) == 0, "pthread_create");
    CHECK_RESULT(ul_handover_server_accept(server, 20000, NULL, &req), UL_OK);
    CHECK(req != NULL, "no request");
    succ = ul_handover_request_successor(req);
    CHECK(succ != NULL && strcmp(succ->release, "v2") == 0, "successor release");
    CHECK(succ->pid == getpid() && succ->own_pid == getpid(), "successor pid %d/%d", succ->pid,
          succ->own_pid);
    CHECK(succ->uid == geteuid() && succ->protocol == 1 && succ->program[0] != '\0',
          "successor uid %u protocol %u program %s", succ->uid, succ->protocol, succ->program);
    hfds[0].label = "pipe-w";
    hfds[0].fd = p[1];
    hfds[1].label = "pipe-r";
    hfds[1].fd = p[0];
    CHECK_RESULT(ul_handover_server_grant(server, req, blob, sizeof blob - 1, hfds, 2, &who),
                 UL_OK);
    CHECK(who != NULL && strcmp(who->release, "v2") == 0, "granted to");
    CHECK(!ul_handover_server_is_serving(server), "a server that handed over stops serving");
    CHECK(!exists(in_svc("handover.sock")), "the socket must be removed after the grant");
    pthread_join(t, NULL);
    CHECK(job.rc == UL_OK && job.inh != NULL, "take: %s %s", ul_result_name((int)job.rc),
          job.message);

    pred = ul_inheritance_predecessor(job.inh);
    CHECK(pred != NULL && strcmp(pred->release, "v1") == 0 && pred->own_pid == getpid() &&
              pred->uid == geteuid(),
          "predecessor");
    state = ul_inheritance_state(job.inh, &state_len);
    CHECK(state_len == sizeof blob - 1 && memcmp(state, blob, state_len) == 0, "state (%zu)",
          state_len);
    CHECK(ul_inheritance_fd_count(job.inh) == 2, "fd count");
    CHECK(strcmp(ul_inheritance_fd_label(job.inh, 0), "pipe-w") == 0 &&
              strcmp(ul_inheritance_fd_label(job.inh, 1), "pipe-r") == 0,
          "labels");
    CHECK(ul_inheritance_fd_label(job.inh, 2) == NULL && ul_inheritance_fd(job.inh, 2) == -1,
          "index out of range");
    CHECK(!ul_inheritance_fd_is_socket(job.inh, 0), "a pipe is no socket");
    fd0 = ul_inheritance_fd(job.inh, 0);
    fd1 = ul_inheritance_fd(job.inh, 1);
    CHECK(fd0 >= 0 && fd1 >= 0 && fd0 != p[1] && fd1 != p[0], "new descriptors %d %d", fd0, fd1);
    CHECK((fcntl(fd0, F_GETFD) & FD_CLOEXEC) && (fcntl(fd1, F_GETFD) & FD_CLOEXEC),
          "received descriptors are close-on-exec");
    /* The same pipe: written through the inherited end, read through ours, and back. */
    CHECK(write(fd0, "abc", 3) == 3 && read(p[0], buf, sizeof buf) == 3, "inherited write end");
    CHECK(write(p[1], "xy", 2) == 2 && read(fd1, buf, sizeof buf) == 2, "inherited read end");

    taken = ul_inheritance_take_fd(job.inh, 0);
    CHECK(taken == fd0, "take_fd gives the descriptor");
    CHECK(ul_inheritance_fd(job.inh, 0) == -1 && ul_inheritance_take_fd(job.inh, 0) == -1,
          "a taken descriptor is no longer the handle's");
    CHECK(ul_inheritance_signalled_count(job.inh) == 1 &&
              strcmp(ul_inheritance_signalled_path(job.inh, 0), in_svc("handover-complete")) == 0,
          "signalled %zu", ul_inheritance_signalled_count(job.inh));
    CHECK(ul_inheritance_signalled_path(job.inh, 1) == NULL, "signalled out of range");
    CHECK(exists(in_svc("handover-complete")), "handover-complete written beside the socket");
    CHECK(ul_inheritance_signal_result(job.inh, msg, sizeof msg) == UL_OK && msg[0] == '\0',
          "signal result");
    ul_inheritance_free(job.inh);
    /* The taken descriptor survives the free; the other one was closed by it. */
    CHECK(fcntl(taken, F_GETFD) >= 0, "the taken descriptor was closed");
    CHECK(fcntl(fd1, F_GETFD) < 0 || fd1 == taken, "ul_inheritance_free must close the rest");
    close(taken);

    /* Finished: no second hand-over from this server. */
    CHECK_RESULT(ul_handover_server_accept(server, 0, NULL, &req), UL_ERR_HANDOVER);
    CHECK_REASON("finished");
    CHECK(req == NULL, "no request");
    ul_handover_server_close(server); /* idempotent */
    ul_handover_server_free(server);
    close(p[0]);
    close(p[1]);
    unlink(in_svc("handover-complete"));
    CHECK(count_fds() == fds_before, "descriptors leaked: %d before, %d after", fds_before,
          count_fds());
}

/* A C old version in one process hands its listening TCP socket and state to a C new
 * version in another, which answers a connection made before the hand-over on the same
 * port: it waited in the shared socket's backlog, nothing was refused. */
static void test_handover_tcp_listener_between_processes(void)
{
    const char *prog = peer_program();
    struct peer old, young;
    char line[256], want[256], port[16];
    struct sockaddr_in addr;
    ssize_t n = 0;
    int c, rc;
    CHECK(prog != NULL, "set UL_HANDOVER_PEER to the handover_peer program");
    make_svc();

    CHECK(spawn_peer(&old, (char *const[]){(char *)prog, "serve", (char *)in_svc("handover.sock"),
                                           "v1", "grant", NULL}) == 0,
          "spawn old");
    CHECK(peer_line(&old, line, sizeof line) == 0 && strncmp(line, "ready ", 6) == 0,
          "old: %s", line);
    snprintf(port, sizeof port, "%.15s", line + 6);

    /* A client connects while the old version is still in charge (it never calls accept:
     * the connection waits in the backlog of the socket that is about to move). */
    c = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    memset(&addr, 0, sizeof addr);
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    addr.sin_port = htons((unsigned short)atoi(port));
    CHECK(c >= 0 && connect(c, (struct sockaddr *)&addr, sizeof addr) == 0, "connect: %s",
          strerror(errno));
    CHECK(write(c, "ping\n", 5) == 5, "write");

    CHECK(spawn_peer(&young, (char *const[]){(char *)prog, "take",
                                             (char *)in_svc("handover.sock"), "v2", NULL}) == 0,
          "spawn new");
    CHECK(peer_line(&old, line, sizeof line) == 0 && strcmp(line, "release v2") == 0, "old: %s",
          line);
    CHECK(peer_line(&old, line, sizeof line) == 0 && strcmp(line, "granted v2") == 0, "old: %s",
          line);
    snprintf(want, sizeof want, "taken v1 port=%s", port);
    CHECK(peer_line(&young, line, sizeof line) == 0 && strcmp(line, want) == 0, "new: %s", line);
    rc = peer_finish(&old);
    CHECK(rc == 0, "old exit status %d", rc);

    /* The new version answers the connection queued before the hand-over. */
    memset(line, 0, sizeof line);
    while (n >= 0 && (size_t)n < sizeof line - 1 && strchr(line, '\n') == NULL) {
        ssize_t r = read(c, line + n, sizeof line - 1 - (size_t)n);
        if (r <= 0)
            break;
        n += r;
    }
    close(c);
    CHECK(strcmp(line, "hello from v2\n") == 0, "reply: %s", line);
    rc = peer_finish(&young);
    CHECK(rc == 0, "new exit status %d", rc);
    CHECK(exists(in_svc("handover-complete")), "the new version signalled handover-complete");
    CHECK(!exists(in_svc("handover.sock")), "socket removed");
}

/* The old version never finishes its release step: the successor gives up with
 * "stalled" when its release timeout runs out; nothing was taken. */
static void test_handover_stalled_peer(void)
{
    const char *prog = peer_program();
    ul_rendezvous_options ro;
    ul_inheritance *inh = NULL;
    struct peer old;
    char line[256];
    int fds_before, rc;
    CHECK(prog != NULL, "set UL_HANDOVER_PEER to the handover_peer program");
    make_svc();
    CHECK(spawn_peer(&old, (char *const[]){(char *)prog, "serve", (char *)in_svc("handover.sock"),
                                           "v1", "hold", NULL}) == 0,
          "spawn old");
    CHECK(peer_line(&old, line, sizeof line) == 0 && strncmp(line, "ready ", 6) == 0,
          "old: %s", line);
    fds_before = count_fds();
    ro = rendezvous_for(in_svc("handover.sock"), "v2");
    ro.release_timeout_ms = 300;
    CHECK_RESULT(ul_handover_take(&ro, &inh), UL_ERR_HANDOVER);
    CHECK_REASON("stalled");
    CHECK_MESSAGE_HAS("stalled");
    CHECK(inh == NULL, "nothing taken");
    CHECK(strcmp(ul_result_name((int)ul_last_error_code()), "handover") == 0, "code name");
    CHECK(!exists(in_svc("handover-complete")), "no signal after a failed take-over");
    CHECK(count_fds() == fds_before, "descriptors leaked: %d before, %d after", fds_before,
          count_fds());
    CHECK(peer_line(&old, line, sizeof line) == 0 && strcmp(line, "release v2") == 0, "old: %s",
          line);
    rc = peer_finish(&old); /* closes its stdin: the "release step" ends, it exits */
    CHECK(rc == 0, "old exit status %d", rc);
}

/* The old version dies (SIGKILL) in its release step: the successor gets "peer-gone";
 * the socket it left is stale, and the next start has no predecessor. */
static void test_handover_peer_gone_mid_transfer(void)
{
    const char *prog = peer_program();
    ul_inheritance *inh = NULL;
    ul_rendezvous_options ro;
    static struct take_job job; /* static: outlives the test if a CHECK returns early */
    struct peer old;
    pthread_t t;
    char line[256];
    int fds_before = count_fds();
    int rc;
    CHECK(prog != NULL, "set UL_HANDOVER_PEER to the handover_peer program");
    make_svc();
    CHECK(spawn_peer(&old, (char *const[]){(char *)prog, "serve", (char *)in_svc("handover.sock"),
                                           "v1", "hold", NULL}) == 0,
          "spawn old");
    CHECK(peer_line(&old, line, sizeof line) == 0 && strncmp(line, "ready ", 6) == 0,
          "old: %s", line);
    memset(&job, 0, sizeof job);
    job.ro = rendezvous_for(in_svc("handover.sock"), "v2");
    CHECK(pthread_create(&t, NULL, take_thread, &job) == 0, "pthread_create");
    if (peer_line(&old, line, sizeof line) != 0 || strcmp(line, "release v2") != 0) {
        kill(old.pid, SIGKILL);
        pthread_join(t, NULL);
        peer_finish(&old);
        CHECK(0, "old: %s", line);
    }
    /* The old version is in its release step, the successor waits for its state. */
    kill(old.pid, SIGKILL);
    pthread_join(t, NULL);
    rc = peer_finish(&old);
    CHECK(rc == 128 + SIGKILL, "old exit status %d", rc);
    CHECK(job.rc == UL_ERR_HANDOVER, "take: %s %s", ul_result_name((int)job.rc), job.message);
    CHECK(strcmp(job.reason, "peer-gone") == 0, "reason %s", job.reason);
    CHECK(job.inh == NULL, "nothing taken");
    CHECK(count_fds() == fds_before, "descriptors leaked: %d before, %d after", fds_before,
          count_fds());
    /* The killed server left its socket behind: stale, removed, no predecessor. */
    ro = rendezvous_for(in_svc("handover.sock"), "v3");
    CHECK_RESULT(ul_handover_take(&ro, &inh), UL_OK);
    CHECK(inh == NULL, "a dead old version is no predecessor");
    CHECK(!exists(in_svc("handover.sock")), "stale socket removed");
}

/* The old version refuses (its resources are busy): the successor gets "refused" with the
 * message, the server keeps serving. A successor that dies before the grant makes the grant
 * fail with "peer-gone", and the server still keeps serving; the next one gets everything. */
static void test_handover_refused_and_failed_grant_keep_serving(void)
{
    const char *prog = peer_program();
    ul_rendezvous_options ro;
    ul_handover_server *server = NULL;
    ul_handover_request *req = NULL;
    const ul_peer_info *who = (const ul_peer_info *)&ro;
    static struct take_job job; /* static: outlives the test if a CHECK returns early */
    struct peer young;
    pthread_t t;
    char line[256];
    int p[2];
    int fds_before = count_fds();
    int rc;
    CHECK(prog != NULL, "set UL_HANDOVER_PEER to the handover_peer program");
    make_svc();
    CHECK(pipe2(p, O_CLOEXEC) == 0, "pipe");
    ro = rendezvous_for(in_svc("handover.sock"), "v1");
    CHECK_RESULT(ul_handover_server_bind(&ro, &server), UL_OK);

    /* Refused. */
    memset(&job, 0, sizeof job);
    job.ro = rendezvous_for(in_svc("handover.sock"), "v2");
    CHECK(pthread_create(&t, NULL, take_thread, &job) == 0, "pthread_create");
    CHECK_RESULT(ul_handover_server_accept(server, 20000, NULL, &req), UL_OK);
    CHECK(req != NULL, "no request");
    CHECK_RESULT(ul_handover_server_refuse(server, req, "the database is busy"), UL_OK);
    pthread_join(t, NULL);
    CHECK(job.rc == UL_ERR_HANDOVER && job.inh == NULL, "take: %s", ul_result_name((int)job.rc));
    CHECK(strcmp(job.reason, "refused") == 0, "reason %s", job.reason);
    CHECK(strstr(job.message, "the database is busy") != NULL, "message: %s", job.message);
    CHECK(ul_handover_server_is_serving(server), "still serving after a refusal");

    /* The successor (another process) dies while we run our release step. */
    CHECK(spawn_peer(&young, (char *const[]){(char *)prog, "take",
                                             (char *)in_svc("handover.sock"), "v2", NULL}) == 0,
          "spawn new");
    if (ul_handover_server_accept(server, 20000, NULL, &req) != UL_OK || req == NULL) {
        kill(young.pid, SIGKILL);
        peer_finish(&young);
        CHECK(0, "no request from the new process");
    }
    CHECK(ul_handover_request_successor(req)->pid == young.pid, "successor pid %d, want %d",
          ul_handover_request_successor(req)->pid, (int)young.pid);
    kill(young.pid, SIGKILL);
    rc = peer_finish(&young);
    CHECK(rc == 128 + SIGKILL, "new exit status %d", rc);
    {
        ul_handover_fd one = {"pipe", -1};
        one.fd = p[0];
        CHECK_RESULT(ul_handover_server_grant(server, req, "s", 1, &one, 1, &who),
                     UL_ERR_HANDOVER);
    }
    CHECK_REASON("peer-gone");
    CHECK(who == NULL, "no successor after a failed grant");
    CHECK(ul_handover_server_is_serving(server), "still serving after a failed grant");
    CHECK(fcntl(p[0], F_GETFD) >= 0, "our descriptor stays ours");

    /* The next successor gets everything. */
    memset(&job, 0, sizeof job);
    job.ro = rendezvous_for(in_svc("handover.sock"), "v3");
    job.ro.signal = false;
    CHECK(pthread_create(&t, NULL, take_thread, &job) == 0, "pthread_create");
    CHECK_RESULT(ul_handover_server_accept(server, 20000, NULL, &req), UL_OK);
    CHECK(req != NULL, "no request");
    CHECK_RESULT(ul_handover_server_grant(server, req, NULL, 0, NULL, 0, &who), UL_OK);
    pthread_join(t, NULL);
    CHECK(job.rc == UL_OK && job.inh != NULL, "take: %s %s", ul_result_name((int)job.rc),
          job.message);
    CHECK(strcmp(who->release, "v3") == 0, "granted to %s", who->release);
    CHECK(ul_inheritance_fd_count(job.inh) == 0, "no descriptors");
    CHECK(ul_inheritance_signalled_count(job.inh) == 0 && !exists(in_svc("handover-complete")),
          "signal off");
    ul_inheritance_state(job.inh, NULL); /* the length pointer is optional */
    ul_inheritance_free(job.inh);
    ul_handover_server_free(server);
    close(p[0]);
    close(p[1]);
    (void)line;
    CHECK(count_fds() == fds_before, "descriptors leaked: %d before, %d after", fds_before,
          count_fds());
}

static void *close_later(void *arg)
{
    ul_handover_server_close(arg);
    return NULL;
}

static void test_handover_accept_timeout_cancel_close(void)
{
    ul_rendezvous_options ro;
    ul_handover_server *server = NULL, *second = (ul_handover_server *)&ro;
    ul_handover_request *req = (ul_handover_request *)&ro;
    ul_inheritance *inh = (ul_inheritance *)&ro;
    ul_cancel_token *token = NULL;
    pthread_t t;
    int fds_before = count_fds();
    make_svc();
    ro = rendezvous_for(in_svc("handover.sock"), "v1");
    CHECK_RESULT(ul_handover_server_bind(&ro, &server), UL_OK);

    /* Timeouts: UL_OK with no request. */
    CHECK_RESULT(ul_handover_server_accept(server, 0, NULL, &req), UL_OK);
    CHECK(req == NULL, "timeout 0");
    req = (ul_handover_request *)&ro;
    CHECK_RESULT(ul_handover_server_accept(server, 50, NULL, &req), UL_OK);
    CHECK(req == NULL, "timeout 50 ms");

    /* A second server on the same socket. */
    CHECK_RESULT(ul_handover_server_bind(&ro, &second), UL_ERR_HANDOVER);
    CHECK_REASON("already-serving");
    CHECK(second == NULL, "no second server");

    /* Cancelled waits: accept, and a take-over (the server does not answer it). */
    CHECK_RESULT(ul_cancel_token_new(&token), UL_OK);
    ul_cancel_token_cancel(token);
    CHECK_RESULT(ul_handover_server_accept(server, -1, token, &req), UL_ERR_CANCELLED);
    CHECK(ul_last_error_handover_reason() == NULL, "no reason for a cancelled wait");
    CHECK(ul_handover_server_is_serving(server), "still serving after a cancelled accept");
    ro.cancel = token;
    CHECK_RESULT(ul_handover_take(&ro, &inh), UL_ERR_CANCELLED);
    CHECK(inh == NULL, "nothing taken");
    ro.cancel = NULL;
    ul_cancel_token_free(token);

    /* Close from another thread ends a waiting accept ("finished"). */
    CHECK(pthread_create(&t, NULL, close_later, server) == 0, "pthread_create");
    CHECK_RESULT(ul_handover_server_accept(server, -1, NULL, &req), UL_ERR_HANDOVER);
    CHECK_REASON("finished");
    pthread_join(t, NULL);
    CHECK(!ul_handover_server_is_serving(server), "closed");
    CHECK(!exists(in_svc("handover.sock")), "close removes the socket");
    ul_handover_server_free(server);
    CHECK(count_fds() == fds_before, "descriptors leaked: %d before, %d after", fds_before,
          count_fds());
}

static void test_handover_arguments(void)
{
    struct {
        ul_rendezvous_options o;
        unsigned char newer_fields[32];
    } big;
    ul_rendezvous_options ro;
    ul_handover_server *server = NULL;
    ul_handover_request *req = NULL;
    ul_inheritance *inh = NULL;
    static struct take_job job; /* static: outlives the test if a CHECK returns early */
    ul_handover_fd bad;
    const char *nul_paths[1] = {NULL};
    pthread_t t;
    size_t len = 7, i;
    char buf[8];
    int fds_before = count_fds();
    make_svc();

    /* Defaults and versioning. */
    memset(&ro, 0xAB, sizeof ro);
    CHECK_RESULT(ul_rendezvous_options_init(&ro, sizeof ro), UL_OK);
    CHECK(ro.struct_size == sizeof ro && ro.socket == NULL && ro.release == NULL &&
              ro.step_timeout_ms == 5000 && ro.release_timeout_ms == 10000 &&
              ro.max_state == 1u << 20 && ro.signal && ro.signal_paths == NULL &&
              ro.signal_path_count == 0 && ro.cancel == NULL,
          "rendezvous defaults");
    memset(&big, 0xAB, sizeof big);
    CHECK_RESULT(ul_rendezvous_options_init(&big.o, sizeof big), UL_OK);
    for (i = 0; i < sizeof big.newer_fields; i++)
        CHECK(big.newer_fields[i] == 0, "tail byte %zu not zeroed", i);
    CHECK_RESULT(ul_rendezvous_options_init(&ro, sizeof ro - 1), UL_ERR_INVALID_ARGUMENT);
    CHECK_MESSAGE_HAS("not the size of any version of ul_rendezvous_options");
    {
        /* A program built against the header of version 1 (before peer_uids): its smaller
         * struct is initialised and read as version 1, the newer fields take defaults. */
        struct rendezvous_options_v1 {
            size_t struct_size;
            const char *socket;
            const char *release;
            int64_t step_timeout_ms;
            int64_t release_timeout_ms;
            size_t max_state;
            bool signal;
            const char *const *signal_paths;
            size_t signal_path_count;
            const ul_cancel_token *cancel;
        } v1, sentinel;
        ul_handover_server *old_server = NULL;
        memset(&v1, 0xAB, sizeof v1);
        memset(&sentinel, 0xAB, sizeof sentinel);
        CHECK_RESULT(ul_rendezvous_options_init((ul_rendezvous_options *)&v1, sizeof v1), UL_OK);
        CHECK(v1.struct_size == sizeof v1 && v1.step_timeout_ms == 5000 && v1.signal &&
                  v1.cancel == NULL && v1.socket == NULL,
              "version 1 defaults");
        v1.socket = in_svc("old-header.sock");
        v1.release = "built against version 1";
        CHECK_RESULT(ul_handover_server_bind((ul_rendezvous_options *)&v1, &old_server), UL_OK);
        CHECK(ul_handover_server_is_serving(old_server), "serving with a version-1 struct");
        ul_handover_server_free(old_server);
        /* A newer header that sets a field this library does not know: refused. */
        memset(&big, 0, sizeof big);
        CHECK_RESULT(ul_rendezvous_options_init(&big.o, sizeof big), UL_OK);
        big.o.socket = in_svc("new-header.sock");
        big.newer_fields[3] = 1;
        CHECK_RESULT(ul_handover_server_bind(&big.o, &old_server), UL_ERR_INVALID_ARGUMENT);
        CHECK_MESSAGE_HAS("a field this library does not know");
        CHECK(!exists(in_svc("new-header.sock")), "nothing bound");
        /* ... and left at zero (its default): accepted. */
        big.newer_fields[3] = 0;
        CHECK_RESULT(ul_handover_server_bind(&big.o, &old_server), UL_OK);
        ul_handover_server_free(old_server);
    }
    CHECK(ul_last_error_handover_reason() == NULL, "no reason for an argument error");
    CHECK_RESULT(ul_rendezvous_options_init(NULL, sizeof ro), UL_ERR_NULL_ARGUMENT);

    /* NULL arguments. */
    ro = rendezvous_for(in_svc("handover.sock"), "v1");
    CHECK_RESULT(ul_handover_take(NULL, &inh), UL_ERR_NULL_ARGUMENT);
    CHECK_MESSAGE_HAS("`opts` is NULL");
    CHECK_RESULT(ul_handover_take(&ro, NULL), UL_ERR_NULL_ARGUMENT);
    CHECK_MESSAGE_HAS("`out` is NULL");
    CHECK_RESULT(ul_handover_server_bind(NULL, &server), UL_ERR_NULL_ARGUMENT);
    CHECK_RESULT(ul_handover_server_bind(&ro, NULL), UL_ERR_NULL_ARGUMENT);
    CHECK_RESULT(ul_handover_server_accept(NULL, 0, NULL, &req), UL_ERR_NULL_ARGUMENT);
    CHECK_MESSAGE_HAS("`server` is NULL");
    CHECK_RESULT(ul_handover_server_grant(NULL, NULL, NULL, 0, NULL, 0, NULL),
                 UL_ERR_NULL_ARGUMENT);
    CHECK_RESULT(ul_handover_server_refuse(NULL, NULL, NULL), UL_ERR_NULL_ARGUMENT);
    CHECK(ul_inheritance_predecessor(NULL) == NULL, "predecessor(NULL)");
    CHECK(ul_inheritance_state(NULL, &len) == NULL && len == 0, "state(NULL)");
    CHECK(ul_inheritance_fd_count(NULL) == 0 && ul_inheritance_fd(NULL, 0) == -1 &&
              ul_inheritance_fd_label(NULL, 0) == NULL && !ul_inheritance_fd_is_socket(NULL, 0) &&
              ul_inheritance_take_fd(NULL, 0) == -1,
          "fd accessors with NULL");
    CHECK(ul_inheritance_signalled_count(NULL) == 0 && ul_inheritance_signalled_path(NULL, 0) == NULL,
          "signalled(NULL)");
    CHECK(ul_inheritance_signal_result(NULL, buf, sizeof buf) == UL_ERR_NULL_ARGUMENT,
          "signal_result(NULL)");
    CHECK(ul_handover_request_successor(NULL) == NULL, "successor(NULL)");
    CHECK(!ul_handover_server_is_serving(NULL) && ul_handover_server_socket_path(NULL) == NULL,
          "server accessors with NULL");
    ul_inheritance_free(NULL);
    ul_handover_request_free(NULL);
    ul_handover_server_close(NULL);
    ul_handover_server_free(NULL);

    /* Malformed options: nothing is created. */
    ro.struct_size = 8;
    CHECK_RESULT(ul_handover_take(&ro, &inh), UL_ERR_INVALID_ARGUMENT);
    CHECK_MESSAGE_HAS("ul_rendezvous_options_init");
    CHECK_RESULT(ul_handover_server_bind(&ro, &server), UL_ERR_INVALID_ARGUMENT);
    ro = rendezvous_for(in_svc("handover.sock"), "v1");
    ro.step_timeout_ms = 0;
    CHECK_RESULT(ul_handover_server_bind(&ro, &server), UL_ERR_INVALID_ARGUMENT);
    CHECK_MESSAGE_HAS("step_timeout_ms");
    ro = rendezvous_for(in_svc("handover.sock"), "v1");
    ro.release_timeout_ms = -5;
    CHECK_RESULT(ul_handover_take(&ro, &inh), UL_ERR_INVALID_ARGUMENT);
    CHECK_MESSAGE_HAS("release_timeout_ms");
    ro = rendezvous_for(in_svc("handover.sock"), "\xff\xfe");
    CHECK_RESULT(ul_handover_server_bind(&ro, &server), UL_ERR_INVALID_ARGUMENT);
    CHECK_MESSAGE_HAS("opts->release is not valid UTF-8");
    ro = rendezvous_for(in_svc("handover.sock"), "v1");
    ro.signal_paths = nul_paths;
    ro.signal_path_count = 1;
    CHECK_RESULT(ul_handover_take(&ro, &inh), UL_ERR_NULL_ARGUMENT);
    CHECK(!exists(in_svc("handover.sock")), "nothing may be created");

    /* A bad grant (a descriptor that is not open) refuses the successor with the reason;
     * the request is consumed and the server keeps serving. */
    ro = rendezvous_for(in_svc("handover.sock"), "v1");
    CHECK_RESULT(ul_handover_server_bind(&ro, &server), UL_OK);
    /* A descriptor number nothing in this process has open (not one just closed: the
     * successor's connection in the thread could reuse that). */
    CHECK(fcntl(999, F_GETFD) < 0, "descriptor 999 is open");
    memset(&job, 0, sizeof job);
    job.ro = rendezvous_for(in_svc("handover.sock"), "v2");
    CHECK(pthread_create(&t, NULL, take_thread, &job) == 0, "pthread_create");
    CHECK_RESULT(ul_handover_server_accept(server, 20000, NULL, &req), UL_OK);
    CHECK(req != NULL, "no request");
    bad.label = "gone";
    bad.fd = 999;
    CHECK_RESULT(ul_handover_server_grant(server, req, NULL, 0, &bad, 1, NULL),
                 UL_ERR_INVALID_ARGUMENT);
    CHECK_MESSAGE_HAS("fds[0].fd");
    pthread_join(t, NULL);
    CHECK(job.rc == UL_ERR_HANDOVER && strcmp(job.reason, "refused") == 0, "take: %s %s",
          ul_result_name((int)job.rc), job.reason);
    CHECK(strstr(job.message, "fds[0].fd") != NULL, "message: %s", job.message);

    /* NULL state with a length, NULL fds with a count, a request that is NULL. */
    memset(&job, 0, sizeof job);
    job.ro = rendezvous_for(in_svc("handover.sock"), "v2");
    CHECK(pthread_create(&t, NULL, take_thread, &job) == 0, "pthread_create");
    CHECK_RESULT(ul_handover_server_accept(server, 20000, NULL, &req), UL_OK);
    CHECK_RESULT(ul_handover_server_grant(server, req, NULL, 3, NULL, 0, NULL),
                 UL_ERR_NULL_ARGUMENT);
    CHECK_MESSAGE_HAS("state");
    pthread_join(t, NULL);
    CHECK(job.rc == UL_ERR_HANDOVER && strcmp(job.reason, "refused") == 0, "take: %s",
          job.reason);
    memset(&job, 0, sizeof job);
    job.ro = rendezvous_for(in_svc("handover.sock"), "v2");
    CHECK(pthread_create(&t, NULL, take_thread, &job) == 0, "pthread_create");
    CHECK_RESULT(ul_handover_server_accept(server, 20000, NULL, &req), UL_OK);
    CHECK_RESULT(ul_handover_server_grant(server, req, "x", 1, NULL, 2, NULL),
                 UL_ERR_NULL_ARGUMENT);
    CHECK_MESSAGE_HAS("fds (with nfds 2)");
    pthread_join(t, NULL);
    CHECK(job.rc == UL_ERR_HANDOVER && strcmp(job.reason, "refused") == 0, "take: %s",
          job.reason);
    CHECK_RESULT(ul_handover_server_grant(server, NULL, NULL, 0, NULL, 0, NULL),
                 UL_ERR_NULL_ARGUMENT);
    CHECK_MESSAGE_HAS("`request` is NULL");
    CHECK_RESULT(ul_handover_server_refuse(server, NULL, "x"), UL_ERR_NULL_ARGUMENT);

    /* A request dropped unanswered: the successor sees the old version go away. */
    memset(&job, 0, sizeof job);
    job.ro = rendezvous_for(in_svc("handover.sock"), "v2");
    CHECK(pthread_create(&t, NULL, take_thread, &job) == 0, "pthread_create");
    CHECK_RESULT(ul_handover_server_accept(server, 20000, NULL, &req), UL_OK);
    ul_handover_request_free(req);
    pthread_join(t, NULL);
    CHECK(job.rc == UL_ERR_HANDOVER && strcmp(job.reason, "peer-gone") == 0, "take: %s",
          job.reason);
    CHECK(ul_handover_server_is_serving(server), "still serving");
    ul_handover_server_free(server);
    CHECK(!exists(in_svc("handover.sock")), "free removes the socket");
    CHECK(count_fds() == fds_before, "descriptors leaked: %d before, %d after", fds_before,
          count_fds());
}

/* ------------------------------------------------------------------------------------ */


/* ------------------------------------------------------------------------------------ */
/* The Supervisor API and the update gate */

static const char *self_path;

static void test_api_not_configured_unreachable_timeout(void)
{
    ul_api *api = (ul_api *)1;
    int silent;
    struct sockaddr_in sa;
    socklen_t len = sizeof sa;
    char addr[64];
    unsetenv("BALENA_SUPERVISOR_ADDRESS");
    unsetenv("RESIN_SUPERVISOR_ADDRESS");
    /* 0 means "no time" throughout the API, never "the default": refused here. */
    CHECK_RESULT(ul_api_new("http://127.0.0.1:48484", "k", 0, &api), UL_ERR_INVALID_ARGUMENT);
    CHECK_MESSAGE_HAS("timeout_ms is 0");
    CHECK_MESSAGE_HAS("10000");
    CHECK(api == NULL, "out is NULL on failure");
    CHECK_RESULT(ul_api_new(NULL, NULL, UL_API_TIMEOUT_DEFAULT_MS, &api), UL_ERR_API);
    CHECK(api == NULL, "out is NULL on failure");
    CHECK(strcmp(ul_last_error_api_reason(), "not-configured") == 0, "reason %s", ul_last_error_api_reason());
    CHECK_MESSAGE_HAS("io.balena.features.supervisor-api");
    CHECK_RESULT(ul_api_new("127.0.0.1:48484", "k", UL_API_TIMEOUT_DEFAULT_MS, &api), UL_ERR_API);
    CHECK_MESSAGE_HAS("not an http:// address");
    CHECK_RESULT(ul_api_new(NULL, NULL, UL_API_TIMEOUT_DEFAULT_MS, NULL), UL_ERR_NULL_ARGUMENT);
    CHECK(ul_last_error_api_reason() == NULL, "no api reason for a binding error");
    /* Listening (connections complete in the backlog), never answering: a timeout. */
    silent = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    memset(&sa, 0, sizeof sa);
    sa.sin_family = AF_INET;
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    CHECK(bind(silent, (struct sockaddr *)&sa, sizeof sa) == 0 && listen(silent, 8) == 0 &&
              getsockname(silent, (struct sockaddr *)&sa, &len) == 0,
          "listen: %s", strerror(errno));
    snprintf(addr, sizeof addr, "http://127.0.0.1:%d", ntohs(sa.sin_port));
    CHECK_RESULT(ul_api_new(addr, "c-secret-key-42", 300, &api), UL_OK);
    CHECK_RESULT(ul_api_ping(api), UL_ERR_API);
    CHECK(strcmp(ul_last_error_api_reason(), "timeout") == 0, "reason %s", ul_last_error_api_reason());
    CHECK_MESSAGE_HAS("within 0.3 s");
    CHECK(strstr(last_message(), "c-secret-key-42") == NULL, "the key leaked: %s", last_message());
    close(silent);
    /* Nobody there any more. */
    CHECK_RESULT(ul_api_update(api, true), UL_ERR_API);
    CHECK(strcmp(ul_last_error_api_reason(), "unreachable") == 0, "reason %s", ul_last_error_api_reason());
    CHECK_RESULT(ul_api_device(api, NULL), UL_ERR_NULL_ARGUMENT);
    CHECK_RESULT(ul_api_ping(NULL), UL_ERR_NULL_ARGUMENT);
    CHECK_RESULT(ul_api_restart_service(api, 1, NULL, false), UL_ERR_NULL_ARGUMENT);
    CHECK_RESULT(ul_api_restart_service(api, 1, "main", false), UL_ERR_API);
    /* This app's service: the id comes from $BALENA_APP_ID, read by the core. */
    unsetenv("BALENA_APP_ID");
    unsetenv("RESIN_APP_ID");
    CHECK_RESULT(ul_api_restart_this_service(api, "main", false), UL_ERR_API);
    CHECK(strcmp(ul_last_error_api_reason(), "not-configured") == 0, "reason %s", ul_last_error_api_reason());
    CHECK_MESSAGE_HAS("BALENA_APP_ID is not set");
    setenv("BALENA_APP_ID", "twelve", 1);
    CHECK_RESULT(ul_api_restart_this_service(api, "main", false), UL_ERR_API);
    CHECK_MESSAGE_HAS("BALENA_APP_ID is \"twelve\"");
    setenv("BALENA_APP_ID", "1", 1);
    /* Past the id, the call itself: nobody listens there any more. */
    CHECK_RESULT(ul_api_restart_this_service(api, "main", false), UL_ERR_API);
    CHECK(strcmp(ul_last_error_api_reason(), "unreachable") == 0, "reason %s", ul_last_error_api_reason());
    CHECK_RESULT(ul_api_restart_this_service(api, NULL, false), UL_ERR_NULL_ARGUMENT);
    unsetenv("BALENA_APP_ID");
    {
        /* A gate's waits cannot take no time either: refused before anything is locked. */
        ul_update_gate *gate = (ul_update_gate *)1;
        ul_options o;
        const char *paths[1];
        paths[0] = in_svc("gate-zero.lock");
        o = opts_for(paths, 1);
        CHECK_RESULT(ul_update_gate_acquire(&o, api, true, 0, UL_GATE_POLL_DEFAULT_MS, &gate),
                     UL_ERR_INVALID_ARGUMENT);
        CHECK_MESSAGE_HAS("settle_timeout_ms is 0");
        CHECK_RESULT(
            ul_update_gate_acquire(&o, api, true, UL_GATE_SETTLE_TIMEOUT_DEFAULT_MS, 0, &gate),
            UL_ERR_INVALID_ARGUMENT);
        CHECK_MESSAGE_HAS("poll_ms is 0");
        CHECK(gate == NULL && !exists(paths[0]), "nothing may be locked");
    }
    ul_api_free(api);
    ul_api_free(NULL);
    CHECK_RESULT(ul_update_gate_free(NULL), UL_OK);
    CHECK(!ul_update_gate_held(NULL), "NULL gate holds nothing");
}

/* The old version of the rehearsal below: hold the lock, and let the update in at the
 * first safe point after the download. */
static volatile sig_atomic_t gate_app_stop;
static void gate_app_on_term(int sig)
{
    (void)sig;
    gate_app_stop = 1;
}

static int gate_app(void)
{
    ul_api *api = NULL;
    ul_update_gate *gate = NULL;
    ul_options o;
    ul_safe_point outcome = UL_SAFE_POINT_NO_UPDATE;
    signal(SIGTERM, gate_app_on_term);
    if (ul_api_new(NULL, NULL, 5000, &api) != UL_OK || ul_options_init(&o, sizeof o) != UL_OK ||
        ul_update_gate_acquire(&o, api, false, UL_GATE_SETTLE_TIMEOUT_DEFAULT_MS, 50, &gate) !=
            UL_OK) {
        fprintf(stderr, "gate app: %s\n", last_message());
        return 1;
    }
    while (outcome == UL_SAFE_POINT_NO_UPDATE && !gate_app_stop) {
        usleep(50000); /* one unit of work */
        if (ul_update_gate_safe_point(gate, &outcome) != UL_OK) {
            fprintf(stderr, "gate app: %s\n", last_message());
            break;
        }
    }
    printf("safe point: %d\n", (int)outcome);
    fflush(stdout);
    while (!gate_app_stop)
        pause();
    ul_update_gate_free(gate);
    ul_api_free(api);
    return 0;
}

static void test_api_gate_end_to_end_under_rehearse(void)
{
    char svc[] = "/tmp/ul-c-gate.XXXXXX";
    char old_cmd[700], report[800];
    const char *json;
    int st = 0, fd;
    CHECK(mkdtemp(svc) != NULL && chmod(svc, 01777) == 0, "mkdtemp: %s", strerror(errno));
    snprintf(old_cmd, sizeof old_cmd, "exec %s --gate-app", self_path);
    snprintf(report, sizeof report, "%s/report.json", svc);
    fd = open(report, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    st = run_to(fd, (char *const[]){(char *)lockctl, "rehearse", "--json", "-q", "--service-dir", svc,
                                    "--download", "0.5s", "--update-after", "0.3s", "--observe", "0.2s",
                                    "--stop-grace", "2s", "--old", old_cmd, "--new",
                                    "trap 'exit 0' TERM; sleep 100 & wait", NULL});
    close(fd);
    json = slurp(report);
    RUN("rm", "-rf", svc);
    CHECK(st == 0, "rehearse exited %d: %.600s", st, json);
    CHECK(strstr(json, "\"ok\": true") != NULL, "report: %.600s", json);
    CHECK(strstr(json, "\"lock_attempts\": 1,") != NULL || strstr(json, "\"lock_attempts\": 2,") != NULL,
          "let in at the first safe point: %.900s", strstr(json, "\"summary\""));
    CHECK(strstr(json, "\"old_exit\": \"exit 0\"") != NULL, "the gate app stopped cleanly");
}

static const struct {
    const char *name;
    void (*fn)(void);
} tests[] = {
#define T(f) {#f, f}
    T(test_version_and_result_names),
    T(test_unknown_when_it_cannot_look),
    T(test_options_init_defaults_and_versioning),
    T(test_acquire_release_both_readers_see_it),
    T(test_two_paths_all_or_nothing),
    T(test_held_by_supervisor_timeout_then_free),
    T(test_held_by_lockctl_acquire),
    T(test_held_by_lockctl_run),
    T(test_on_wait_says_who_holds_it),
    T(test_lockctl_sees_our_lock),
    T(test_stale_lock_reclaimed_only_when_allowed),
    T(test_fork_child_never_releases_the_parent_lock),
    T(test_lost_lock_is_reported_and_never_deleted),
    T(test_permission_and_supervisor_uid),
    T(test_invalid_paths_delete_nothing),
    T(test_io_error_out_of_descriptors),
    T(test_cancel_from_thread_and_signal_handler),
    T(test_null_arguments),
    T(test_invalid_arguments),
    T(test_panic_is_caught_at_the_boundary),
    T(test_error_message_buffer_edges),
    T(test_status_reports_every_state),
    T(test_handover_complete),
    T(test_last_error_holder_buffer),
    T(test_shared_holds_and_nested_acquire),
    T(test_update_waiting_and_the_yield),
    T(test_threads_exclude_each_other),
    T(test_handover_first_start_no_predecessor),
    T(test_handover_peer_uids),
    T(test_listen_backlog_is_the_kernels_limit),
    T(test_handover_state_and_descriptors_in_process),
    T(test_handover_tcp_listener_between_processes),
    T(test_handover_stalled_peer),
    T(test_handover_peer_gone_mid_transfer),
    T(test_handover_refused_and_failed_grant_keep_serving),
    T(test_handover_accept_timeout_cancel_close),
    T(test_handover_arguments),
    T(test_api_not_configured_unreachable_timeout),
    T(test_api_gate_end_to_end_under_rehearse),
#undef T
};

static int selected(const char *name, int argc, char **argv)
{
    int i;
    if (argc < 2)
        return 1;
    for (i = 1; i < argc; i++)
        if (strstr(name, argv[i]) != NULL)
            return 1;
    return 0;
}

int main(int argc, char **argv)
{
    size_t i;
    int passed = 0, failed = 0;
    const char *base = getenv("TMPDIR");
    self_path = argv[0];
    /* Tests probe with the Supervisor's real lockfile; each probe of a held lock is an
     * attempt that later acquisitions (here and in lockctl) would yield to. The yield has
     * its own test, which turns it back on. */
    setenv("UPDATE_LOCK_YIELD_TO_UPDATES", "0", 1);
    if (argc == 2 && strcmp(argv[1], "--gate-app") == 0)
        return gate_app();
    lockctl = getenv("LOCKCTL");
    if (lockctl == NULL || access(lockctl, X_OK) != 0) {
        fprintf(stderr, "set LOCKCTL to the lockctl binary (cargo build -p lockctl)\n");
        return 2;
    }
    snprintf(tmp_root, sizeof tmp_root, "%s/ul-c-tests.XXXXXX", base ? base : "/tmp");
    if (mkdtemp(tmp_root) == NULL || chmod(tmp_root, 0755) != 0) {
        perror("mkdtemp");
        return 2;
    }
    for (i = 0; i < sizeof tests / sizeof tests[0]; i++) {
        if (!selected(tests[i].name, argc, argv))
            continue;
        current_name = tests[i].name;
        current_failed = 0;
        tests[i].fn();
        if (current_failed) {
            failed++;
            printf("FAIL %s\n", tests[i].name);
        } else {
            passed++;
            printf("ok   %s\n", tests[i].name);
        }
        fflush(stdout);
    }
    /* A failed test may have left a `lockctl acquire` holder running: release it. */
    for (i = 1; i <= (size_t)svc_count; i++) {
        char p[600];
        snprintf(p, sizeof p, "%s/svc%zu/updates.lock", tmp_root, i);
        if (exists(p) && strstr(slurp(p), "program=lockctl acquire") != NULL)
            RUN((char *)lockctl, "release", "--path", p, "--no-legacy");
    }
    RUN("rm", "-rf", tmp_root);
    printf("c tests: %d passed, %d failed\n", passed, failed);
    return failed == 0 && passed > 0 ? 0 : 1;
}
