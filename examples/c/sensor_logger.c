/*
 * sensor-logger: reads a sensor every INTERVAL and appends the sample to a data file under
 * the update lock, so neither an application update (the Supervisor) nor a host OS update
 * reboot can cut a write in half. Between samples no lock is held: updates go ahead then.
 *
 *   sensor-logger [-o FILE] [-n COUNT] [-i INTERVAL_MS] [-t TIMEOUT_MS] [-l LOCK_PATH]...
 *                 [-x HOOK]
 *
 *   -o FILE        data file to append to (default /data/samples.csv)
 *   -n COUNT       samples to take, 0 = until SIGTERM/SIGINT (default 0)
 *   -i INTERVAL_MS pause between samples (default 10000)
 *   -t TIMEOUT_MS  how long to wait for the lock per sample, -1 = forever (default 60000)
 *   -l LOCK_PATH   lock path (repeatable; default: the Supervisor's, from the environment,
 *                  plus the legacy name)
 *   -x HOOK        shell command run inside the lock after each write (e.g. a sync to
 *                  cloud storage); SAMPLE_FILE holds the data file's path
 *
 * SIGTERM/SIGINT (docker stop) end the program between samples; a sample in progress is
 * completed first, and a wait for the lock is cancelled (nothing written).
 * Exit status: 0 done or stopped, 73 the lock stayed held (as lockctl), 64 usage, 1 error.
 *
 * Built against the installed library through pkg-config (see Makefile).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <update_lock.h>

#define MAX_LOCKS 8

static volatile sig_atomic_t stop;
static ul_cancel_token *cancel;

static void on_stop(int sig)
{
    (void)sig;
    stop = 1;
    ul_cancel_token_cancel(cancel); /* ends a wait for the lock; async-signal-safe */
}

/* Print the thread's last update-lock error as lockctl does: error[CODE]: message. */
static void report(const char *what)
{
    char msg[2048];
    ul_last_error_message(msg, sizeof msg); /* truncated safely if longer */
    fprintf(stderr, "sensor-logger: %s: error[%s]: %s\n", what,
            ul_result_name((int)ul_last_error_code()), msg);
}

/* The "sensor": the 1-minute load average (a stand-in for a real probe). */
static double read_sensor(void)
{
    double load = 0.0;
    FILE *f = fopen("/proc/loadavg", "r");
    if (f != NULL) {
        if (fscanf(f, "%lf", &load) != 1)
            load = 0.0;
        fclose(f);
    }
    return load;
}

/* Append one CSV line and make it durable. */
static int append_sample(const char *file, unsigned long n, double value)
{
    char line[128];
    struct timespec now;
    int len, fd;
    clock_gettime(CLOCK_REALTIME, &now);
    len = snprintf(line, sizeof line, "%lld.%03ld,%lu,%.2f\n", (long long)now.tv_sec,
                   now.tv_nsec / 1000000L, n, value);
    fd = open(file, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (fd < 0) {
        fprintf(stderr, "sensor-logger: %s: %s\n", file, strerror(errno));
        return -1;
    }
    if (write(fd, line, (size_t)len) != len || fsync(fd) != 0) {
        fprintf(stderr, "sensor-logger: %s: %s\n", file, strerror(errno));
        close(fd);
        return -1;
    }
    return close(fd);
}

static int run_hook(const char *hook, const char *file)
{
    int status = 0;
    pid_t pid = fork();
    if (pid < 0)
        return -1;
    if (pid == 0) {
        setenv("SAMPLE_FILE", file, 1);
        execl("/bin/sh", "sh", "-c", hook, (char *)NULL);
        _exit(127);
    }
    while (waitpid(pid, &status, 0) < 0)
        if (errno != EINTR)
            return -1;
    return WIFEXITED(status) ? WEXITSTATUS(status) : 1;
}

/* Sleep `ms`, returning early on a stop signal. */
static void pause_ms(long ms)
{
    struct timespec ts;
    ts.tv_sec = ms / 1000;
    ts.tv_nsec = (ms % 1000) * 1000000L;
    while (!stop && nanosleep(&ts, &ts) != 0 && errno == EINTR)
        ;
}

static void usage(void)
{
    fprintf(stderr, "usage: sensor-logger [-o FILE] [-n COUNT] [-i INTERVAL_MS] [-t TIMEOUT_MS] "
                    "[-l LOCK_PATH]... [-x HOOK]\n");
}

int main(int argc, char **argv)
{
    const char *file = "/data/samples.csv";
    const char *hook = NULL;
    const char *locks[MAX_LOCKS];
    size_t nlocks = 0;
    unsigned long count = 0, n;
    long interval = 10000;
    long long timeout = 60000;
    ul_options opts;
    struct sigaction sa;
    int c, status = 0;

    while ((c = getopt(argc, argv, "o:n:i:t:l:x:")) != -1) {
        switch (c) {
        case 'o': file = optarg; break;
        case 'n': count = strtoul(optarg, NULL, 10); break;
        case 'i': interval = strtol(optarg, NULL, 10); break;
        case 't': timeout = strtoll(optarg, NULL, 10); break;
        case 'x': hook = optarg; break;
        case 'l':
            if (nlocks == MAX_LOCKS) {
                fprintf(stderr, "sensor-logger: at most %d lock paths\n", MAX_LOCKS);
                return 64;
            }
            locks[nlocks++] = optarg;
            break;
        default: usage(); return 64;
        }
    }
    if (optind != argc) {
        usage();
        return 64;
    }

    if (ul_cancel_token_new(&cancel) != UL_OK) {
        report("cannot create a cancel token");
        return 1;
    }
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_stop;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);

    /* Options are initialised by the library (defaults, struct_size), then adjusted. */
    if (ul_options_init(&opts, sizeof opts) != UL_OK) {
        report("ul_options_init");
        return 1;
    }
    if (nlocks > 0) {
        opts.paths = locks;
        opts.path_count = nlocks;
    }
    opts.timeout_ms = timeout;
    opts.program = "sensor-logger";
    opts.cancel = cancel;

    fprintf(stderr, "sensor-logger %s (libupdate_lock %s): writing to %s\n", "1.0",
            ul_version(), file);
    for (n = 1; !stop && (count == 0 || n <= count); n++) {
        ul_lock *lock = NULL;
        ul_result r;
        double value = read_sensor();

        fprintf(stderr, "sensor-logger: sample %lu: waiting for the update lock\n", n);
        r = ul_acquire(&opts, &lock);
        if (r == UL_ERR_CANCELLED) {
            fprintf(stderr, "sensor-logger: stopping while waiting for the lock; nothing "
                            "written\n");
            break;
        }
        if (r != UL_OK) {
            report("cannot take the update lock");
            status = (r == UL_ERR_HELD || r == UL_ERR_TIMEOUT) ? 73 : 1;
            break;
        }
        /* Critical section: no application update, no host OS reboot in here. */
        if (append_sample(file, n, value) != 0)
            status = 1;
        if (status == 0 && hook != NULL && run_hook(hook, file) != 0) {
            fprintf(stderr, "sensor-logger: hook failed\n");
            status = 1;
        }
        /* Still ours? The Supervisor's lock override deletes app locks. */
        if (ul_check(lock) != UL_OK)
            report("the lock was taken away during the write");
        if (ul_release(lock) != UL_OK)
            report("release");
        if (status != 0)
            break;
        printf("sample %lu written: %.2f\n", n, value);
        fflush(stdout);
        if (count == 0 || n < count)
            pause_ms(interval);
    }
    /* No signal handler may use the token once it is freed. */
    sigemptyset(&sa.sa_mask);
    sigaddset(&sa.sa_mask, SIGTERM);
    sigaddset(&sa.sa_mask, SIGINT);
    sigprocmask(SIG_BLOCK, &sa.sa_mask, NULL);
    ul_cancel_token_free(cancel);
    return status;
}
