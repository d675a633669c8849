// The header as a C++ translation unit: it must compile with -Wall -Wextra -Werror
// -pedantic, link against libupdate_lock, and work (take and release a lock, read an
// error, the hand-over API). Run by tests/run.sh; prints "c++ tests: N passed, M failed".
#include "update_lock.h"

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <sys/stat.h>
#include <unistd.h>

namespace {

int failed = 0;
int passed = 0;

void check(bool ok, const std::string &what)
{
    if (ok) {
        ++passed;
        return;
    }
    ++failed;
    char msg[1024];
    ul_last_error_message(msg, sizeof msg);
    std::fprintf(stderr, "  FAIL %s (last error: %s)\n", what.c_str(), msg);
}

// RAII over ul_lock, as a C++ project would write it.
class Lock {
public:
    explicit Lock(const ul_options &opts) : lock_(nullptr), result_(ul_acquire(&opts, &lock_)) {}
    ~Lock() { ul_release(lock_); }
    Lock(const Lock &) = delete;
    Lock &operator=(const Lock &) = delete;
    ul_result result() const { return result_; }
    const ul_lock *get() const { return lock_; }

private:
    ul_lock *lock_;
    ul_result result_;
};

std::string last_error()
{
    std::string s(ul_last_error_message(nullptr, 0) + 1, '\0');
    ul_last_error_message(&s[0], s.size());
    s.resize(s.size() - 1);
    return s;
}

} // namespace

int main()
{
    char dir[] = "/tmp/ul-cxx-test.XXXXXX";
    if (mkdtemp(dir) == nullptr)
        return 2;
    const std::string path = std::string(dir) + "/updates.lock";
    const char *paths[] = {path.c_str()};

    ul_options opts;
    check(ul_options_init(&opts, sizeof opts) == UL_OK, "ul_options_init");
    opts.paths = paths;
    opts.path_count = 1;
    opts.program = "cxx-smoke";
    {
        Lock lock(opts);
        check(lock.result() == UL_OK, "acquire");
        check(ul_check(lock.get()) == UL_OK, "check");
        struct stat st;
        check(lstat(path.c_str(), &st) == 0, "lock file exists");
        ul_lock *second = nullptr;
        // The same thread again would wait for itself: it fails at once.
        check(ul_try_acquire(&opts, &second) == UL_ERR_ALREADY_HELD, "second acquire fails");
        check(std::string(ul_result_name(ul_last_error_code())) == "already-held", "code name");
        check(last_error().find("already held by this process") != std::string::npos,
              "message: " + last_error());
        check(second == nullptr, "no second handle");
    }
    struct stat st;
    check(lstat(path.c_str(), &st) != 0, "released by the destructor");

    // Hand-over: a first start has no predecessor; a server with nobody asking times out.
    const std::string sock = std::string(dir) + "/handover.sock";
    ul_rendezvous_options ro;
    check(ul_rendezvous_options_init(&ro, sizeof ro) == UL_OK, "ul_rendezvous_options_init");
    ro.socket = sock.c_str();
    ro.release = "cxx";
    ul_inheritance *inh = nullptr;
    check(ul_handover_take(&ro, &inh) == UL_OK && inh == nullptr, "no predecessor");
    ul_handover_server *server = nullptr;
    check(ul_handover_server_bind(&ro, &server) == UL_OK, "bind");
    ul_handover_request *req = nullptr;
    check(ul_handover_server_accept(server, 0, nullptr, &req) == UL_OK && req == nullptr,
          "accept times out");
    ul_handover_server *second = nullptr;
    check(ul_handover_server_bind(&ro, &second) == UL_ERR_HANDOVER, "already serving");
    check(ul_last_error_handover_reason() != nullptr &&
              std::string(ul_last_error_handover_reason()) == "already-serving",
          "reason");
    ul_handover_server_free(server);
    check(lstat(sock.c_str(), &st) != 0, "socket removed");
    check(std::strlen(ul_version()) > 0, "version");
    rmdir(dir);
    std::printf("c++ tests: %d passed, %d failed\n", passed, failed);
    return failed == 0 ? 0 : 1;
}
