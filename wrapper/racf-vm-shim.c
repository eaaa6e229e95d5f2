/*
 * racf-vm-shim: the setuid-root entry point installed as /usr/local/racf/vm.
 *
 * It does as little as possible: sanitize the process (fds, signals, timers, umask,
 * rlimits, cwd, environment, credentials, a private /tmp and /var/tmp) and exec the
 * Python side with a fixed argv and a fixed environment. It parses nothing but its own
 * argv count. The caller's environment is handed over as data only, in a sealed memfd on
 * fd 3, so nothing downstream (the loader, the interpreter, libraries) honours any of it
 * implicitly.
 * See docs/ARCHITECTURE.md and shared/reference/security.md section 0.1.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <sched.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <signal.h>
#include <string.h>
#include <sys/auxv.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/time.h>
#include <unistd.h>

#ifndef RACF_CONFIG
#define RACF_CONFIG "/etc/racf-vm/racf-vm.toml"
#endif
#ifndef RACF_PYTHON
#define RACF_PYTHON "/opt/racf-vm/venv/bin/python3"
#endif
#ifndef RACF_ENTRY
#define RACF_ENTRY "racf_vm.job.main"
#endif

#define EX_SOFTWARE 70
#define EX_NOPERM 77
#define EX_USAGE 64

#define ENV_MAX_BYTES (1024 * 1024) /* total size of the environment blob */
#define ENV_MAX_ENTRIES 4096
#define ENV_FD 3
#define FD_CLOSE_BOUND (1 << 20) /* fs.nr_open default: no fd can be above it */
/* The privileged side's own /tmp and /var/tmp: root's only, small, no devices or setuid. */
#define PRIVATE_TMP_OPTS "mode=0700,uid=0,gid=0,size=64m"

extern char **environ;

/* One line "racf-vm: ..." on stderr, then exit. Uses only async-safe-ish stdio on fd 2. */
static void die(int status, const char *fmt, ...)
{
    va_list ap;
    char buf[512];
    int n = snprintf(buf, sizeof buf, "racf-vm: ");
    va_start(ap, fmt);
    vsnprintf(buf + n, sizeof buf - (size_t)n, fmt, ap);
    va_end(ap);
    size_t len = strnlen(buf, sizeof buf - 2);
    buf[len++] = '\n';
    /* Best effort: if fd 2 is unusable there is nowhere else to report. */
    ssize_t w = write(STDERR_FILENO, buf, len);
    (void)w;
    _exit(status);
}

/* Is standard descriptor fd, open with file status flags fl, usable as such? */
static int stdio_usable(int fd, int fl, const struct stat *full)
{
    struct stat st;
    int acc = fl & O_ACCMODE;
    if ((fl & O_PATH) || fstat(fd, &st) != 0 || S_ISDIR(st.st_mode))
        return 0;
    if (fd == STDIN_FILENO)
        return acc == O_RDONLY || acc == O_RDWR;
    if (acc != O_WRONLY && acc != O_RDWR)
        return 0;
    /* Every write to /dev/full fails (ENOSPC). */
    return !(full && S_ISCHR(st.st_mode) && st.st_rdev == full->st_rdev);
}

/* fds 0-2 must be open, or the first files we open would become the job's stdio; and
 * usable: glibc fills closed ones of a setuid program with /dev/full (write-only) for 0
 * and read-only /dev/null for 1 and 2, and a stdout that cannot be written makes Python
 * exit with 120 at shutdown instead of with the wrapper's own status. Unusable ones
 * become /dev/null opened the right way. */
static void repair_stdio(void)
{
    struct stat full_st;
    const struct stat *full =
        stat("/dev/full", &full_st) == 0 && S_ISCHR(full_st.st_mode) ? &full_st : NULL;
    for (int fd = 0; fd <= 2; fd++) {
        int mode = fd == STDIN_FILENO ? O_RDONLY : O_WRONLY;
        int fl = fcntl(fd, F_GETFL);
        if (fl == -1 && errno == EBADF) {
            /* Lower fds are open, so open() returns exactly fd. On failure there is no
             * reliable stderr to report on: just exit. */
            if (open("/dev/null", mode) != fd)
                _exit(EX_SOFTWARE);
            continue;
        }
        if (fl != -1 && stdio_usable(fd, fl, full))
            continue;
        int nfd = open("/dev/null", mode | O_CLOEXEC);
        if (nfd < 0 || dup2(nfd, fd) != fd)
            _exit(EX_SOFTWARE);
        (void)close(nfd);
    }
}

/* Nothing a caller sets up survives into the privileged side: an ignored SIGTERM would
 * make condor_rm fail, an ignored SIGCHLD would reap our children behind our back, a
 * blocked mask would hold every signal, and an armed timer (alarm()) would kill the
 * wrapper mid-job. Only SIG_IGN dispositions, the mask and itimers survive execve. */
static void reset_signals_and_timers(void)
{
    static const int timers[] = {ITIMER_REAL, ITIMER_VIRTUAL, ITIMER_PROF};
    const struct itimerval zero = {{0, 0}, {0, 0}};
    for (size_t i = 0; i < sizeof timers / sizeof timers[0]; i++)
        if (setitimer(timers[i], &zero, NULL) != 0)
            die(EX_SOFTWARE, "cannot reset interval timer %d: %s", timers[i], strerror(errno));

    /* The raw system calls: glibc's wrappers refuse or skip the numbers it reserves for
     * itself (SIGCANCEL, SIGSETXID), and a caller can leave those ignored or blocked too. */
    struct {
        void (*handler)(int);
        unsigned long flags;
        void (*restorer)(void);
        unsigned long mask;
    } dfl = {SIG_DFL, 0, NULL, 0};
    for (int sig = 1; sig < NSIG; sig++) {
        if (sig == SIGKILL || sig == SIGSTOP)
            continue;
        if (syscall(SYS_rt_sigaction, sig, &dfl, NULL, sizeof dfl.mask) != 0)
            die(EX_SOFTWARE, "cannot reset signal %d: %s", sig, strerror(errno));
    }
    /* Last: a signal the caller left pending now acts by default, before anything else. */
    unsigned long none = 0;
    if (syscall(SYS_rt_sigprocmask, SIG_SETMASK, &none, NULL, sizeof none) != 0)
        die(EX_SOFTWARE, "cannot reset the signal mask: %s", strerror(errno));
}

/* No inherited fd (user sockets, files) may reach the Python side or its children. */
static void close_other_fds(void)
{
    if (close_range(3, ~0U, 0) == 0)
        return;
    /* Old kernel (< 5.9): close everything up to the largest possible fd number. */
    for (int fd = 3; fd < FD_CLOSE_BOUND; fd++)
        (void)close(fd);
}

/* Fixed limits, raised back if the user lowered them. Root may raise hard limits only
 * with CAP_SYS_RESOURCE, which some hosts drop from the bounding set; there we raise what
 * the caller's hard limit allows, and refuse (before any state change) when that is below
 * the minimum racf-vm needs to work. */
static void set_rlimits(void)
{
    static const struct {
        int res;
        rlim_t soft, hard, min;
        const char *name;
    } lim[] = {
        {RLIMIT_CORE, 0, 0, 0, "CORE"}, /* never dump a root process holding job data */
        {RLIMIT_FSIZE, RLIM_INFINITY, RLIM_INFINITY, RLIM_INFINITY, "FSIZE"},
        {RLIMIT_DATA, RLIM_INFINITY, RLIM_INFINITY, RLIM_INFINITY, "DATA"},
        {RLIMIT_AS, RLIM_INFINITY, RLIM_INFINITY, RLIM_INFINITY, "AS"},
        {RLIMIT_CPU, RLIM_INFINITY, RLIM_INFINITY, RLIM_INFINITY, "CPU"},
        {RLIMIT_STACK, 8UL << 20, RLIM_INFINITY, 8UL << 20, "STACK"},
        {RLIMIT_NOFILE, 4096, 4096, 1024, "NOFILE"},
        {RLIMIT_NPROC, 65536, 65536, 1024, "NPROC"},
        {RLIMIT_MEMLOCK, 8UL << 20, 8UL << 20, 0, "MEMLOCK"},
        {RLIMIT_LOCKS, RLIM_INFINITY, RLIM_INFINITY, 0, "LOCKS"},
        {RLIMIT_SIGPENDING, 65536, 65536, 0, "SIGPENDING"},
        {RLIMIT_MSGQUEUE, 819200, 819200, 0, "MSGQUEUE"},
        {RLIMIT_NICE, 0, 0, 0, "NICE"},
        {RLIMIT_RTPRIO, 0, 0, 0, "RTPRIO"},
    };
    for (size_t i = 0; i < sizeof lim / sizeof lim[0]; i++) {
        struct rlimit rl = {lim[i].soft, lim[i].hard}, cur;
        if (setrlimit(lim[i].res, &rl) == 0)
            continue;
        if (errno != EPERM || getrlimit(lim[i].res, &cur) != 0)
            die(EX_SOFTWARE, "cannot set RLIMIT_%s: %s", lim[i].name, strerror(errno));
        rl.rlim_max = cur.rlim_max < lim[i].hard ? cur.rlim_max : lim[i].hard;
        rl.rlim_cur = rl.rlim_max < lim[i].soft ? rl.rlim_max : lim[i].soft;
        if (setrlimit(lim[i].res, &rl) != 0)
            die(EX_SOFTWARE, "cannot set RLIMIT_%s: %s", lim[i].name, strerror(errno));
        if (rl.rlim_cur < lim[i].min)
            die(EX_NOPERM, "the caller's hard RLIMIT_%s (%llu) is too low and cannot be raised; "
                "run racf-vm with the default resource limits", lim[i].name,
                (unsigned long long)rl.rlim_max);
    }
}

/* HTCondor's MOUNT_UNDER_SCRATCH (default "/tmp,/var/tmp") hands us a mount namespace
 * where /tmp and /var/tmp are directories the job user owns: nothing privileged may
 * create, open or connect to anything there. So the privileged side gets a namespace of
 * its own (inherited by what it forks, not by libvirtd) with fresh root-only tmpfs
 * mounts over both. Fail closed: never go on with the caller's /tmp. */
static void private_tmp(void)
{
    static const char *const dirs[] = {"/tmp", "/var/tmp"};
    if (unshare(CLONE_NEWNS) != 0)
        die(errno == EPERM ? EX_NOPERM : EX_SOFTWARE, "cannot create a private mount namespace: %s",
            strerror(errno));
    /* Private, so that none of our mounts propagates back into the caller's namespace
     * (or the host's, where / is shared, as under systemd). */
    if (mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) != 0)
        die(EX_SOFTWARE, "cannot make the mount namespace private: %s", strerror(errno));
    for (size_t i = 0; i < sizeof dirs / sizeof dirs[0]; i++)
        if (mount("tmpfs", dirs[i], "tmpfs", MS_NOSUID | MS_NODEV, PRIVATE_TMP_OPTS) != 0)
            die(errno == EPERM ? EX_NOPERM : EX_SOFTWARE, "cannot mount a private %s: %s", dirs[i],
                strerror(errno));
}

static void write_all(int fd, const char *buf, size_t len)
{
    while (len > 0) {
        ssize_t n = write(fd, buf, len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            die(EX_SOFTWARE, "cannot write the environment memfd: %s", strerror(errno));
        buf += n;
        len -= (size_t)n;
    }
}

/* Copy environ verbatim ("K=V\0" each) into a sealed memfd and put it on fd 3. */
static void env_to_memfd(void)
{
    size_t total = 0, count = 0;
    for (char **e = environ; e && *e; e++) {
        total += strlen(*e) + 1;
        if (++count > ENV_MAX_ENTRIES || total > ENV_MAX_BYTES)
            die(EX_USAGE, "the job environment is too large (limits: %d variables, %d bytes)",
                ENV_MAX_ENTRIES, ENV_MAX_BYTES);
    }
    /* No MFD_CLOEXEC: the fd must survive execve into Python. */
    int fd = memfd_create("racf-vm-env", MFD_ALLOW_SEALING);
    if (fd < 0)
        die(EX_SOFTWARE, "memfd_create failed: %s", strerror(errno));
    for (char **e = environ; e && *e; e++)
        write_all(fd, *e, strlen(*e) + 1);
    if (fcntl(fd, F_ADD_SEALS, F_SEAL_WRITE | F_SEAL_GROW | F_SEAL_SHRINK | F_SEAL_SEAL) != 0)
        die(EX_SOFTWARE, "cannot seal the environment memfd: %s", strerror(errno));
    if (lseek(fd, 0, SEEK_SET) != 0)
        die(EX_SOFTWARE, "cannot rewind the environment memfd: %s", strerror(errno));
    if (fd != ENV_FD) {
        if (dup2(fd, ENV_FD) != ENV_FD)
            die(EX_SOFTWARE, "cannot move the environment memfd to fd 3: %s", strerror(errno));
        (void)close(fd);
    }
}

int main(int argc, char **argv)
{
    /* PwnKit: with argc == 0, argv[1] would alias envp[0]. Touch nothing else first.
     * Linux >= 5.18 turns an empty argv into {""}: refuse an empty argv[0] as well. */
    if (argc < 1 || argv == NULL || argv[0] == NULL || argv[0][0] == '\0')
        die(EX_NOPERM, "refusing to run with an empty argument list");

    /* AT_SECURE == 1: the kernel did a setuid transition (and glibc sanitized the loader
     * environment). It is 0 when the bit is missing or no_new_privs suppressed it. */
    if (getauxval(AT_SECURE) != 1 || geteuid() != 0)
        die(EX_NOPERM, "not installed setuid root (or no_new_privs is set); ask your administrator");

    /* The only identity racf-vm ever trusts: the kernel's real ids of the caller. */
    uid_t ruid = getuid();
    gid_t rgid = getgid();

    repair_stdio();
    reset_signals_and_timers();
    close_other_fds();
    umask(077);
    set_rlimits();
    if (chdir("/") != 0)
        die(EX_SOFTWARE, "chdir / failed: %s", strerror(errno));

    env_to_memfd();
    if (clearenv() != 0)
        die(EX_SOFTWARE, "clearenv failed");

    /* Fully root from here: the caller can no longer signal or ptrace us. */
    if (setgroups(0, NULL) != 0)
        die(EX_SOFTWARE, "setgroups failed: %s", strerror(errno));
    if (setresgid(0, 0, 0) != 0)
        die(EX_SOFTWARE, "setresgid failed: %s", strerror(errno));
    if (setresuid(0, 0, 0) != 0)
        die(EX_SOFTWARE, "setresuid failed: %s", strerror(errno));
    if (prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) != 0)
        die(EX_SOFTWARE, "prctl(PR_SET_DUMPABLE) failed: %s", strerror(errno));
    private_tmp();

    char uid_s[16], gid_s[16];
    snprintf(uid_s, sizeof uid_s, "%u", (unsigned)ruid);
    snprintf(gid_s, sizeof gid_s, "%u", (unsigned)rgid);

    /* Fixed prefix (ending in "--"), then the user's argv[1..], then NULL.
     * argv[0] is the full interpreter path, not "python3": CPython finds its venv
     * (pyvenv.cfg) from argv[0], and a bare name would be looked up in PATH instead. */
    const char *prefix[] = {RACF_PYTHON, "-I", "-B", "-m", RACF_ENTRY, "--config", RACF_CONFIG,
                            "--caller-uid", uid_s, "--caller-gid", gid_s, "--env-fd", "3", "--"};
    const size_t np = sizeof prefix / sizeof prefix[0];
    char **full = calloc(np + (size_t)argc, sizeof(char *)); /* argc-1 args + NULL */
    if (!full)
        die(EX_SOFTWARE, "out of memory");
    memcpy(full, prefix, sizeof prefix);
    for (int i = 1; i < argc; i++)
        full[np + (size_t)i - 1] = argv[i];
    full[np + (size_t)argc - 1] = NULL;

    char *const envp[] = {"PATH=/usr/sbin:/usr/bin:/sbin:/bin", "LANG=C.UTF-8", NULL};
    execve(RACF_PYTHON, full, envp);
    die(EX_SOFTWARE, "cannot execute %s: %s", RACF_PYTHON, strerror(errno));
    return EX_SOFTWARE;
}
