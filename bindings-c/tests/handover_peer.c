/*
 * The other side of the hand-over tests in test_update_lock.c: a C "old version" that
 * serves its listening TCP socket and state, or a C "new version" that takes them over and
 * answers a connection on the inherited socket. Fork+exec'd by the tests (under valgrind or
 * built with ASan/UBSan, like the tests), it reports each step as a line on stdout, so the
 * tests synchronise on those lines, never on sleeps.
 *
 *   handover_peer serve SOCKET RELEASE grant|hold
 *       listen on 127.0.0.1:0, serve hand-over; prints "ready PORT", then "release
 *       SUCCESSOR" once a successor asked. grant: hand over the listening socket ("http")
 *       and the state "port=PORT", print "granted SUCCESSOR" (or "error REASON") and exit.
 *       hold: never answer (a stalled release step) until stdin reaches EOF, then exit.
 *   handover_peer take SOCKET RELEASE
 *       take over; prints "none" (no predecessor, exit 4) or "taken PREDECESSOR STATE",
 *       then accepts one connection on the inherited socket, reads a line and answers
 *       "hello from RELEASE".
 * Both modes check that every descriptor the library opened is closed again (exit 5).
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "update_lock.h"

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

static void say(const char *fmt, const char *a, const char *b)
{
    printf(fmt, a, b);
    fflush(stdout);
}

static int fail(const char *what)
{
    char msg[1024];
    const char *reason = ul_last_error_handover_reason();
    ul_last_error_message(msg, sizeof msg);
    fprintf(stderr, "handover_peer: %s: [%s] %s\n", what, ul_result_name((int)ul_last_error_code()),
            msg);
    say("error %s%s\n", reason ? reason : ul_result_name((int)ul_last_error_code()), "");
    return 1;
}

static void rendezvous(ul_rendezvous_options *ro, const char *sock_path, const char *release)
{
    if (ul_rendezvous_options_init(ro, sizeof *ro) != UL_OK)
        exit(2);
    ro->socket = sock_path;
    ro->release = release;
    ro->step_timeout_ms = 10000;
    ro->release_timeout_ms = 20000;
}

static int serve(const char *sock_path, const char *release, int hold)
{
    ul_rendezvous_options ro;
    ul_handover_server *server = NULL;
    ul_handover_request *req = NULL;
    const ul_peer_info *who = NULL;
    struct sockaddr_in addr;
    socklen_t len = sizeof addr;
    char port[16], state[32], successor[256];
    int before = count_fds();
    int lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    int rc = 0;
    memset(&addr, 0, sizeof addr);
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (lfd < 0 || bind(lfd, (struct sockaddr *)&addr, sizeof addr) != 0 || listen(lfd, 16) != 0 ||
        getsockname(lfd, (struct sockaddr *)&addr, &len) != 0) {
        perror("handover_peer: listen");
        return 2;
    }
    snprintf(port, sizeof port, "%d", (int)ntohs(addr.sin_port));
    rendezvous(&ro, sock_path, release);
    if (ul_handover_server_bind(&ro, &server) != UL_OK)
        return fail("bind");
    say("ready %s%s\n", port, "");
    if (ul_handover_server_accept(server, 20000, NULL, &req) != UL_OK) {
        ul_handover_server_free(server);
        return fail("accept");
    }
    if (req == NULL) {
        ul_handover_server_free(server);
        say("timeout%s%s\n", "", "");
        return 3;
    }
    snprintf(successor, sizeof successor, "%s", ul_handover_request_successor(req)->release);
    say("release %s%s\n", successor, "");
    if (hold) {
        /* A release step that never ends, until the test closes our stdin. */
        char buf[64];
        while (read(0, buf, sizeof buf) > 0) {
        }
        ul_handover_request_free(req);
    } else {
        ul_handover_fd fds[1];
        fds[0].label = "http";
        fds[0].fd = lfd;
        snprintf(state, sizeof state, "port=%s", port);
        if (ul_handover_server_grant(server, req, state, strlen(state), fds, 1, &who) != UL_OK) {
            rc = fail("grant");
        } else if (ul_handover_server_is_serving(server)) {
            fprintf(stderr, "handover_peer: still serving after a grant\n");
            rc = 1;
        } else {
            say("granted %s%s\n", who->release, "");
        }
    }
    ul_handover_server_free(server);
    close(lfd);
    if (count_fds() != before) {
        fprintf(stderr, "handover_peer: %d descriptors before, %d after\n", before, count_fds());
        return 5;
    }
    return rc;
}

static int take(const char *sock_path, const char *release)
{
    ul_rendezvous_options ro;
    ul_inheritance *inh = NULL;
    const unsigned char *state;
    size_t state_len = 0;
    char line[256], reply[300], text[64];
    struct pollfd pfd;
    ssize_t n;
    int before = count_fds();
    int lfd, conn;
    rendezvous(&ro, sock_path, release);
    if (ul_handover_take(&ro, &inh) != UL_OK)
        return fail("take");
    if (inh == NULL) {
        say("none%s%s\n", "", "");
        return 4;
    }
    if (ul_inheritance_fd_count(inh) != 1 || strcmp(ul_inheritance_fd_label(inh, 0), "http") != 0 ||
        !ul_inheritance_fd_is_socket(inh, 0)) {
        fprintf(stderr, "handover_peer: expected one socket labelled http\n");
        ul_inheritance_free(inh);
        return 1;
    }
    state = ul_inheritance_state(inh, &state_len);
    snprintf(text, sizeof text, "%.*s", (int)state_len, (const char *)state);
    lfd = ul_inheritance_take_fd(inh, 0);
    say("taken %s %s\n", ul_inheritance_predecessor(inh)->release, text);
    ul_inheritance_free(inh);

    /* Serve one connection on the socket we inherited (bounded: 20 s). */
    pfd.fd = lfd;
    pfd.events = POLLIN;
    if (poll(&pfd, 1, 20000) != 1) {
        fprintf(stderr, "handover_peer: no connection on the inherited socket\n");
        return 1;
    }
    conn = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
    if (conn < 0) {
        perror("handover_peer: accept");
        return 1;
    }
    n = read(conn, line, sizeof line - 1);
    line[n > 0 ? n : 0] = '\0';
    snprintf(reply, sizeof reply, "hello from %s\n", release);
    if (write(conn, reply, strlen(reply)) != (ssize_t)strlen(reply))
        return 1;
    close(conn);
    close(lfd);
    if (count_fds() != before) {
        fprintf(stderr, "handover_peer: %d descriptors before, %d after\n", before, count_fds());
        return 5;
    }
    return 0;
}

int main(int argc, char **argv)
{
    if (argc == 5 && strcmp(argv[1], "serve") == 0)
        return serve(argv[2], argv[3], strcmp(argv[4], "hold") == 0);
    if (argc == 4 && strcmp(argv[1], "take") == 0)
        return take(argv[2], argv[3]);
    fprintf(stderr, "usage: handover_peer serve SOCKET RELEASE grant|hold | take SOCKET RELEASE\n");
    return 2;
}
