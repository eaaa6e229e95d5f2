/*
 * A stand-in for HTCondor's condor_starter, for tests and the demo (no HTCondor daemons can
 * be installed here). It reproduces what the real starter does around a vanilla job that a
 * job wrapper depends on (reference/htcondor.md sections 1-3):
 *   - the job is a direct fork child of this (root) process, run as the job user, setsid;
 *   - a sandbox EXECUTE/dir_<pid>, 0700, owned by the user, holding .job.ad and .machine.ad
 *     written as the user in old ClassAd syntax;
 *   - a cgroup with a hard memory limit (slot Memory MiB) and cpu shares 100*Cpus;
 *   - the environment PublishToEnv builds, and nothing else;
 *   - graceful vacate (SIGTERM to the one job pid, SIGKILL after a timeout) or a hard kill,
 *     then the whole cgroup is killed (Kill_Family) and removed;
 *   - MOUNT_UNDER_SCRATCH, by default "/tmp,/var/tmp" as in HTCondor since 8.8: for each
 *     directory D the job user creates <sandbox>/D (0700, parents too), and the job runs in a
 *     private mount namespace of its own with <sandbox>/D bind-mounted over D. Like HTCondor,
 *     a D missing on the host, or one the sandbox lies under, is skipped with a warning.
 *     --mount-under-scratch LIST (comma- or space-separated absolute paths) replaces the list;
 *     an empty LIST turns it off.
 * Usage: condor_starter --user NAME [options] -- JOB [ARGS...]
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <getopt.h>
#include <grp.h>
#include <limits.h>
#include <linux/openat2.h> /* RESOLVE_*: glibc has no openat2() wrapper yet */
#include <pwd.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define EX_USAGE 64
#define EX_SOFTWARE 70
#define MAX_LINES 256
#define MAX_ENV 512
#define MAX_SCRATCH 16
/* The real starter's cgroup name derives from its EXECUTE; mimic a stock pool's name. */
#define CONDOR_EXECUTE_NAME "condor_var_lib_condor_execute"

static const char *thread_vars[] = {
    "CUBACORES", "GOMAXPROCS", "JULIA_NUM_THREADS", "MKL_NUM_THREADS", "NUMEXPR_NUM_THREADS",
    "OMP_NUM_THREADS", "OMP_THREAD_LIMIT", "OPENBLAS_NUM_THREADS", "PYTHON_CPU_COUNT",
    "ROOT_MAX_THREADS", "TF_LOOP_PARALLEL_ITERATIONS", "TF_NUM_THREADS", NULL};

static struct {
    const char *user, *execute, *slot;
    long cluster, proc, memory, cpus;
    const char *ad[MAX_LINES], *mad[MAX_LINES], *env[MAX_ENV], *input[MAX_LINES];
    int nad, nmad, nenv, ninput;
    double vacate_after, vacate_timeout, kill_after;
    int keep_sandbox, stdio_files;
    const char *mount_under_scratch;
} opt = {NULL, "/var/lib/racf-vm-test/execute", "slot1_1", 1, 0, 1024, 1,
         {0}, {0}, {0}, {0}, 0, 0, 0, 0, -1, 10, -1, 0, 0, "/tmp,/var/tmp"};

static struct passwd pw;    /* copy of the job user's passwd entry */
static char sandbox[PATH_MAX];
static char cg_paths[2][PATH_MAX]; /* cgroups the job joins (v1: memory, cpu; v2: scope) */
static char cg_slice[PATH_MAX];    /* v2 only: the slice holding the limits */
static int ncg;
static char scratch_dirs[MAX_SCRATCH][PATH_MAX]; /* MOUNT_UNDER_SCRATCH entries in use */
static int nscratch;
static volatile sig_atomic_t got_signal, got_kill;
static pid_t main_pid;       /* cleanup on failure happens in the main process only */
static int cleanup_armed;    /* set once the sandbox exists */

static void remove_cgroups(void);
static void remove_sandbox(void);

static void die(int status, const char *fmt, ...)
{
    va_list ap;
    fputs("starter: ", stderr);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    if (cleanup_armed && getpid() == main_pid) {
        cleanup_armed = 0;
        remove_cgroups();
        if (!opt.keep_sandbox)
            remove_sandbox();
    }
    exit(status);
}

/* snprintf that refuses to truncate (paths and values must be exact). */
static void xsnprintf(char *buf, size_t size, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(buf, size, fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= size)
        die(EX_USAGE, "value too long: %.60s...", buf);
}

static void usage(void)
{
    fputs("usage: condor_starter --user NAME [--execute DIR] [--slot NAME] [--cluster N]\n"
          "  [--proc N] [--memory MIB] [--cpus N] [--ad 'A = v']... [--machine-ad 'A = v']...\n"
          "  [--env K=V]... [--input NAME=CONTENT]... [--vacate-after SECS [--vacate-timeout SECS]]\n"
          "  [--kill-after SECS]  (SIGTERM to the stand-in vacates the job; SIGUSR2 hard-kills it)\n"
          "  [--keep-sandbox] [--stdio inherit|files] [--mount-under-scratch LIST]\n"
          "  -- JOB [ARGS...]\n",
          stderr);
    exit(EX_USAGE);
}

static long parse_long(const char *s, long min, long max)
{
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || end == s || *end || v < min || v > max)
        usage();
    return v;
}

static double parse_secs(const char *s)
{
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || end == s || *end || v < 0 || v > 1e6)
        usage();
    return v;
}

static void write_file(const char *path, const char *text)
{
    int fd = open(path, O_WRONLY | O_CLOEXEC);
    if (fd < 0)
        die(EX_SOFTWARE, "open %s: %s", path, strerror(errno));
    size_t len = strlen(text);
    if (write(fd, text, len) != (ssize_t)len)
        die(EX_SOFTWARE, "write %s to %s: %s", text, path, strerror(errno));
    if (close(fd) != 0)
        die(EX_SOFTWARE, "close %s: %s", path, strerror(errno));
}

static void mkdir_ok(const char *path, mode_t mode)
{
    if (mkdir(path, mode) != 0 && errno != EEXIST)
        die(EX_SOFTWARE, "mkdir %s: %s", path, strerror(errno));
}

/* Become the job user for good (used in forked children only). */
static void drop_to_user(void)
{
    if (initgroups(pw.pw_name, pw.pw_gid) != 0 || setgid(pw.pw_gid) != 0 ||
        setuid(pw.pw_uid) != 0)
        die(EX_SOFTWARE, "cannot become %s: %s", pw.pw_name, strerror(errno));
    if (pw.pw_uid != 0 && (setuid(0) == 0 || getuid() != pw.pw_uid || geteuid() != pw.pw_uid))
        die(EX_SOFTWARE, "privileges were not dropped");
}

/* ---- ClassAd files (old syntax: backslash is literal except before a double quote) ---- */

static void put_string(FILE *f, const char *attr, const char *value)
{
    if (strchr(value, '\n'))
        die(EX_USAGE, "%s contains a newline; the stand-in cannot write it", attr);
    fprintf(f, "%s = \"", attr);
    for (const char *p = value; *p; p++) {
        if (*p == '"')
            fputc('\\', f);
        fputc(*p, f);
    }
    fputs("\"\n", f);
}

/* Args (V1: space-joined) when representable, else Arguments (V2: quoted), like HTCondor. */
static void put_args(FILE *f, char **args)
{
    int v1 = 1;
    size_t len = 1;
    for (char **a = args; *a; a++) {
        if (**a == '\0' || strpbrk(*a, " \t'\""))
            v1 = 0;
        len += 2 * strlen(*a) + 3;
    }
    char *buf = calloc(1, len), *q = buf;
    if (!buf)
        die(EX_SOFTWARE, "out of memory");
    for (char **a = args; *a; a++) {
        if (a != args)
            *q++ = ' ';
        int quote = !v1 && (**a == '\0' || strpbrk(*a, " \t'\""));
        if (quote)
            *q++ = '\'';
        for (const char *p = *a; *p; p++) {
            if (*p == '\'' && quote)
                *q++ = '\''; /* V2: a single quote inside quotes is doubled */
            *q++ = *p;
        }
        if (quote)
            *q++ = '\'';
    }
    put_string(f, v1 ? "Args" : "Arguments", buf);
    free(buf);
}

static FILE *create_ad(const char *name)
{
    char path[PATH_MAX];
    xsnprintf(path, sizeof path, "%s/%s", sandbox, name);
    int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0644);
    FILE *f = fd < 0 ? NULL : fdopen(fd, "w");
    if (!f)
        die(EX_SOFTWARE, "create %s: %s", path, strerror(errno));
    return f;
}

static void finish_ad(FILE *f, const char *name)
{
    if (ferror(f) | fclose(f))
        die(EX_SOFTWARE, "write %s: %s", name, strerror(errno));
}

/* Written as the user in a forked child, like set_user_priv(); WriteAdFiles(). */
static void write_ads(char **job_argv, const char *host)
{
    pid_t pid = fork();
    if (pid < 0)
        die(EX_SOFTWARE, "fork: %s", strerror(errno));
    if (pid == 0) {
        drop_to_user();
        FILE *f = create_ad(".job.ad");
        fprintf(f, "ClusterId = %ld\nProcId = %ld\nJobUniverse = 5\n", opt.cluster, opt.proc);
        put_string(f, "Owner", pw.pw_name);
        put_string(f, "Cmd", job_argv[0]);
        put_args(f, job_argv + 1);
        put_string(f, "Iwd", sandbox);
        fprintf(f, "RequestCpus = %ld\nRequestMemory = %ld\n", opt.cpus, opt.memory);
        for (int i = 0; i < opt.nad; i++)
            fprintf(f, "%s\n", opt.ad[i]);
        finish_ad(f, ".job.ad");

        f = create_ad(".machine.ad");
        long slot_id = strtol(opt.slot + strcspn(opt.slot, "0123456789"), NULL, 10);
        fprintf(f, "Cpus = %ld\nMemory = %ld\nSlotID = %ld\n", opt.cpus, opt.memory, slot_id);
        fprintf(f, "Name = \"%s@%s\"\n", opt.slot, host);
        for (int i = 0; i < opt.nmad; i++)
            fprintf(f, "%s\n", opt.mad[i]);
        finish_ad(f, ".machine.ad");
        _exit(0);
    }
    int st;
    if (waitpid(pid, &st, 0) != pid || !WIFEXITED(st) || WEXITSTATUS(st) != 0)
        die(WIFEXITED(st) && WEXITSTATUS(st) ? WEXITSTATUS(st) : EX_SOFTWARE,
            "writing the ad files failed");
}

/* ---- Environment: the job ad's Environment (--env), then PublishToEnv's values ---- */

static char *envv[MAX_ENV + 64];
static int nenvv;

static int env_find(const char *key)
{
    size_t klen = strlen(key);
    for (int i = 0; i < nenvv; i++)
        if (strncmp(envv[i], key, klen) == 0 && envv[i][klen] == '=')
            return i;
    return -1;
}

/* override=0: keep a value the job already set (the thread-count variables). */
static void env_set(const char *key, const char *value, int override)
{
    char *kv;
    if (asprintf(&kv, "%s=%s", key, value) < 0)
        die(EX_SOFTWARE, "out of memory");
    int i = env_find(key);
    if (i >= 0) {
        if (override)
            envv[i] = kv;
        else
            free(kv);
        return;
    }
    if (nenvv >= (int)(sizeof envv / sizeof envv[0]) - 1)
        die(EX_USAGE, "too many environment variables");
    envv[nenvv++] = kv;
}

static void build_env(void)
{
    for (int i = 0; i < opt.nenv; i++) {
        char *kv = strdup(opt.env[i]), *eq = strchr(kv, '=');
        if (!eq || eq == kv)
            die(EX_USAGE, "--env needs K=V, got '%s'", opt.env[i]);
        *eq = '\0';
        env_set(kv, eq + 1, 1);
        free(kv);
    }
    char buf[PATH_MAX + 32];
    env_set("BATCH_SYSTEM", "HTCondor", 1);
    env_set("_CONDOR_SCRATCH_DIR", sandbox, 1);
    xsnprintf(buf, sizeof buf, "%s/.job.ad", sandbox);
    env_set("_CONDOR_JOB_AD", buf, 1);
    xsnprintf(buf, sizeof buf, "%s/.machine.ad", sandbox);
    env_set("_CONDOR_MACHINE_AD", buf, 1);
    env_set("_CONDOR_SLOT", opt.slot, 1);
    env_set("_CONDOR_JOB_IWD", sandbox, 1);
    env_set("_CONDOR_JOB_PIDS", "", 1);
    env_set("TMPDIR", sandbox, 1);
    env_set("TEMP", sandbox, 1);
    env_set("TMP", sandbox, 1);
    env_set("HOME", pw.pw_dir, 1);
    xsnprintf(buf, sizeof buf, "%ld", opt.cpus);
    for (const char **v = thread_vars; *v; v++)
        env_set(*v, buf, 0);
    xsnprintf(buf, sizeof buf, "%ld", (long)getpid());
    env_set("CONDOR_STARTER_PID", buf, 1);
    envv[nenvv] = NULL;
}

/* ---- cgroups ---- */

/* Create a job cgroup. One left over by a killed stand-in is reused if empty; one with
 * processes belongs to a running job of the same slot name, which must not be touched. */
static void make_job_cgroup(const char *path)
{
    if (mkdir(path, 0755) == 0)
        return;
    if (errno != EEXIST)
        die(EX_SOFTWARE, "mkdir %s: %s", path, strerror(errno));
    char procs[PATH_MAX + 16], c;
    xsnprintf(procs, sizeof procs, "%s/cgroup.procs", path);
    FILE *f = fopen(procs, "re");
    int busy = f && fread(&c, 1, 1, f) == 1;
    if (f)
        fclose(f);
    if (busy)
        die(75, "slot %s is busy (%s has processes); use another --slot", opt.slot, path);
}

static void setup_cgroups(const char *host)
{
    char name[256], path[PATH_MAX], val[64];
    xsnprintf(name, sizeof name, "%s_%s@%s", CONDOR_EXECUTE_NAME, opt.slot, host);
    struct stat st;
    if (stat("/sys/fs/cgroup/cgroup.controllers", &st) == 0) {
        /* Pure v2: <own cgroup>/<name>.slice (limits) / <name>.scope (processes). */
        char line[PATH_MAX], base[PATH_MAX] = "";
        FILE *f = fopen("/proc/self/cgroup", "re");
        while (f && fgets(line, sizeof line, f))
            if (strncmp(line, "0::", 3) == 0) {
                line[strcspn(line, "\n")] = '\0';
                xsnprintf(base, sizeof base, "/sys/fs/cgroup%s", line + 3);
            }
        if (f)
            fclose(f);
        if (!*base)
            die(EX_SOFTWARE, "cannot find my own cgroup v2");
        xsnprintf(path, sizeof path, "%s/cgroup.subtree_control", base);
        int fd = open(path, O_WRONLY | O_CLOEXEC);
        /* "No internal processes": if we sit in base ourselves, move to a leaf first. */
        if (fd < 0 || write(fd, "+memory +cpu", 12) != 12) {
            char leaf[PATH_MAX];
            xsnprintf(leaf, sizeof leaf, "%s/starter-%ld", base, (long)getpid());
            mkdir_ok(leaf, 0755);
            xsnprintf(line, sizeof line, "%s/cgroup.procs", leaf);
            xsnprintf(val, sizeof val, "%ld", (long)getpid());
            write_file(line, val);
            write_file(path, "+memory +cpu");
        }
        if (fd >= 0)
            close(fd);
        xsnprintf(cg_slice, sizeof cg_slice, "%s/%s.slice", base, name);
        mkdir_ok(cg_slice, 0755);
        xsnprintf(cg_paths[0], PATH_MAX, "%s/%s.scope", cg_slice, name);
        make_job_cgroup(cg_paths[0]);
        ncg = 1; /* only now is it ours to clean up */
        xsnprintf(path, sizeof path, "%s/memory.max", cg_slice);
        xsnprintf(val, sizeof val, "%lld", (long long)opt.memory << 20);
        write_file(path, val);
        xsnprintf(path, sizeof path, "%s/cpu.weight", cg_slice);
        xsnprintf(val, sizeof val, "%ld", opt.cpus * 100 > 10000 ? 10000 : opt.cpus * 100);
        write_file(path, val);
    } else if (stat("/sys/fs/cgroup/memory", &st) == 0) {
        /* v1: <ctrl>/htcondor/<name> for memory and cpu, like HTCondor through 24.x. */
        static const char *ctrl[2] = {"memory", "cpu"};
        for (int i = 0; i < 2; i++) {
            xsnprintf(path, sizeof path, "/sys/fs/cgroup/%s/htcondor", ctrl[i]);
            mkdir_ok(path, 0755);
            xsnprintf(cg_paths[ncg], PATH_MAX, "%s/%s", path, name);
            make_job_cgroup(cg_paths[ncg]);
            ncg++; /* only now is it ours to clean up */
        }
        xsnprintf(path, sizeof path, "%s/memory.limit_in_bytes", cg_paths[0]);
        xsnprintf(val, sizeof val, "%lld", (long long)opt.memory << 20);
        write_file(path, val);
        xsnprintf(path, sizeof path, "%s/cpu.shares", cg_paths[1]);
        xsnprintf(val, sizeof val, "%ld", opt.cpus * 100);
        write_file(path, val);
    } else {
        fputs("starter: warning: no cgroup memory controller; the job runs unconfined\n", stderr);
    }
}

static void join_cgroups(void)
{
    char path[PATH_MAX + 16], val[32];
    xsnprintf(val, sizeof val, "%ld", (long)getpid());
    for (int i = 0; i < ncg; i++) {
        xsnprintf(path, sizeof path, "%s/cgroup.procs", cg_paths[i]);
        write_file(path, val);
    }
}

/* Kill_Family: SIGKILL whatever is left in the job's cgroups, then remove them. */
static void remove_cgroups(void)
{
    char path[PATH_MAX + 16], line[64];
    for (int round = 0; round < 100; round++) {
        int left = 0;
        for (int i = 0; i < ncg; i++) {
            xsnprintf(path, sizeof path, "%s/cgroup.procs", cg_paths[i]);
            FILE *f = fopen(path, "re");
            while (f && fgets(line, sizeof line, f)) {
                pid_t p = (pid_t)strtol(line, NULL, 10);
                if (p > 0 && kill(p, SIGKILL) == 0)
                    left = 1;
            }
            if (f)
                fclose(f);
        }
        if (!left)
            break;
        usleep(20000);
    }
    for (int i = 0; i < ncg; i++)
        if (rmdir(cg_paths[i]) != 0)
            fprintf(stderr, "starter: warning: rmdir %s: %s\n", cg_paths[i], strerror(errno));
    if (*cg_slice && rmdir(cg_slice) != 0)
        fprintf(stderr, "starter: warning: rmdir %s: %s\n", cg_slice, strerror(errno));
}

/* ---- sandbox removal: contents as the user (never follow their symlinks as root) ---- */

static int rm_entry(const char *path, const struct stat *sb, int type, struct FTW *ftw)
{
    (void)sb;
    if (ftw->level == 0)
        return 0;
    if ((type == FTW_DP ? rmdir(path) : unlink(path)) != 0)
        fprintf(stderr, "starter: warning: cannot remove %s: %s\n", path, strerror(errno));
    return 0;
}

static void remove_sandbox(void)
{
    pid_t pid = fork();
    if (pid == 0) {
        drop_to_user();
        nftw(sandbox, rm_entry, 32, FTW_DEPTH | FTW_PHYS | FTW_MOUNT);
        _exit(0);
    }
    int st;
    if (pid > 0)
        waitpid(pid, &st, 0);
    if (rmdir(sandbox) != 0)
        fprintf(stderr, "starter: warning: rmdir %s: %s\n", sandbox, strerror(errno));
}

/* ---- MOUNT_UNDER_SCRATCH ---- */

/* An absolute path without empty, "." or ".." components. */
static int plain_abs_path(const char *d)
{
    if (d[0] != '/')
        return 0;
    for (const char *c = d; *c == '/'; c += 1 + strcspn(c + 1, "/")) {
        size_t n = strcspn(c + 1, "/");
        if (n == 0 || (n == 1 && c[1] == '.') || (n == 2 && c[1] == '.' && c[2] == '.'))
            return 0;
    }
    return 1;
}

/* Split the list (commas or spaces) into absolute paths; keep those that exist on the host
 * as directories and that the sandbox does not lie under. */
static void parse_scratch_list(void)
{
    char *list = strdup(opt.mount_under_scratch), *save = NULL;
    if (!list)
        die(EX_SOFTWARE, "out of memory");
    for (char *d = strtok_r(list, ", \t", &save); d; d = strtok_r(NULL, ", \t", &save)) {
        size_t len = strlen(d);
        while (len > 1 && d[len - 1] == '/')
            d[--len] = '\0';
        if (!plain_abs_path(d))
            die(EX_USAGE, "--mount-under-scratch: '%s' is not a plain absolute path", d);
        struct stat st;
        if (stat(d, &st) != 0 || !S_ISDIR(st.st_mode)) {
            fprintf(stderr, "starter: warning: %s does not exist; not mounted under scratch\n", d);
        } else if (strncmp(sandbox, d, len) == 0 && (sandbox[len] == '/' || !sandbox[len])) {
            fprintf(stderr, "starter: warning: the sandbox is under %s; not mounted under "
                    "scratch\n", d);
        } else {
            if (nscratch >= MAX_SCRATCH)
                die(EX_USAGE, "--mount-under-scratch: more than %d directories", MAX_SCRATCH);
            xsnprintf(scratch_dirs[nscratch++], PATH_MAX, "%s", d);
        }
    }
    free(list);
}

/* <sandbox>/D for each D, made by the user (mode 0700, parents too), like HTCondor's
 * mkdir_and_parents_if_needed(..., S_IRWXU, PRIV_USER). */
static void make_scratch_dirs(void)
{
    if (nscratch == 0)
        return;
    pid_t pid = fork();
    if (pid < 0)
        die(EX_SOFTWARE, "fork: %s", strerror(errno));
    if (pid == 0) {
        drop_to_user();
        for (int i = 0; i < nscratch; i++) {
            char path[PATH_MAX];
            xsnprintf(path, sizeof path, "%s%s", sandbox, scratch_dirs[i]);
            for (char *s = path + strlen(sandbox) + 1; *s; s++)
                if (*s == '/') {
                    *s = '\0';
                    mkdir_ok(path, 0700);
                    *s = '/';
                }
            mkdir_ok(path, 0700);
        }
        _exit(0);
    }
    int st;
    if (waitpid(pid, &st, 0) != pid || !WIFEXITED(st) || WEXITSTATUS(st) != 0)
        die(EX_SOFTWARE, "cannot create the scratch directories");
}

/* In the job child, still root: a private mount namespace with <sandbox>/D over D. The
 * source is opened beneath the sandbox without following symlinks (the sandbox is the
 * user's) and bind-mounted through its fd. */
static void mount_scratch_dirs(void)
{
    if (nscratch == 0)
        return;
    if (unshare(CLONE_NEWNS) != 0)
        die(EX_SOFTWARE, "unshare(CLONE_NEWNS): %s", strerror(errno));
    if (mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) != 0)
        die(EX_SOFTWARE, "make / private: %s", strerror(errno));
    int dfd = open(sandbox, O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (dfd < 0)
        die(EX_SOFTWARE, "open %s: %s", sandbox, strerror(errno));
    for (int i = 0; i < nscratch; i++) {
        struct open_how how = {.flags = O_PATH | O_DIRECTORY | O_CLOEXEC,
                               .resolve = RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS};
        int fd = (int)syscall(SYS_openat2, dfd, scratch_dirs[i] + 1, &how, sizeof how);
        struct stat st;
        if (fd < 0)
            die(EX_SOFTWARE, "open %s%s: %s", sandbox, scratch_dirs[i], strerror(errno));
        if (fstat(fd, &st) != 0 || st.st_uid != pw.pw_uid)
            die(EX_SOFTWARE, "%s%s is not the job user's", sandbox, scratch_dirs[i]);
        char src[64];
        xsnprintf(src, sizeof src, "/proc/self/fd/%d", fd);
        if (mount(src, scratch_dirs[i], NULL, MS_BIND, NULL) != 0)
            die(EX_SOFTWARE, "bind-mount %s%s on %s: %s", sandbox, scratch_dirs[i],
                scratch_dirs[i], strerror(errno));
        close(fd);
    }
    close(dfd);
}

/* ---- the job ---- */

static void run_job_child(char **job_argv)
{
    join_cgroups();
    mount_scratch_dirs();
    drop_to_user();
    if (setsid() < 0)
        die(EX_SOFTWARE, "setsid: %s", strerror(errno));
    if (chdir(sandbox) != 0)
        die(EX_SOFTWARE, "chdir %s: %s", sandbox, strerror(errno));
    int in = open("/dev/null", O_RDONLY);
    if (in < 0 || dup2(in, 0) != 0)
        die(EX_SOFTWARE, "stdin: %s", strerror(errno));
    if (in != 0)
        close(in);
    if (opt.stdio_files) {
        static const char *names[2] = {"_condor_stdout", "_condor_stderr"};
        for (int i = 0; i < 2; i++) {
            int fd = open(names[i], O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW, 0644);
            if (fd < 0 || dup2(fd, i + 1) != i + 1)
                die(EX_SOFTWARE, "%s: %s", names[i], strerror(errno));
            close(fd);
        }
    }
    /* The real starter hands the job fds 0-2 only. */
    if (close_range(3, ~0U, 0) != 0)
        for (int fd = 3; fd < 65536; fd++)
            close(fd);
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);
    execve(job_argv[0], job_argv, envv);
    fprintf(stderr, "starter: cannot execute %s: %s\n", job_argv[0], strerror(errno));
    _exit(127);
}

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

static void on_signal(int sig) { got_signal = sig; }
static void on_kill_request(int sig) { got_kill = sig; }

/* --input NAME=CONTENT: a file in the sandbox, written as the user (like input transfer). */
static void write_inputs(void)
{
    for (int i = 0; i < opt.ninput; i++) {
        const char *eq = strchr(opt.input[i], '=');
        char name[NAME_MAX + 1];
        size_t len = eq ? (size_t)(eq - opt.input[i]) : 0;
        if (!eq || len == 0 || len > NAME_MAX || memchr(opt.input[i], '/', len))
            die(EX_USAGE, "--input wants NAME=CONTENT with a plain file name");
        memcpy(name, opt.input[i], len);
        name[len] = '\0';
        pid_t pid = fork();
        if (pid < 0)
            die(EX_SOFTWARE, "fork: %s", strerror(errno));
        if (pid == 0) {
            drop_to_user();
            char path[PATH_MAX];
            xsnprintf(path, sizeof path, "%s/%s", sandbox, name);
            int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW, 0644);
            size_t n = strlen(eq + 1);
            if (fd < 0 || write(fd, eq + 1, n) != (ssize_t)n || close(fd) != 0)
                _exit(1);
            _exit(0);
        }
        int st;
        if (waitpid(pid, &st, 0) != pid || !WIFEXITED(st) || WEXITSTATUS(st) != 0)
            die(EX_SOFTWARE, "cannot write input file %s", name);
    }
}

/* Wait for the job, applying --vacate-after/--kill-after; a SIGTERM/SIGINT/SIGHUP to the
 * stand-in itself acts as a vacate. Polling keeps this simple and race-free. */
static int wait_job(pid_t job, struct rusage *ru)
{
    double start = now(), term_at = -1;
    int st;
    for (;;) {
        pid_t r = wait4(job, &st, WNOHANG, ru);
        if (r == job)
            return st;
        if (r < 0 && errno != EINTR)
            die(EX_SOFTWARE, "waitpid: %s", strerror(errno));
        double t = now() - start;
        if (term_at < 0 && ((opt.vacate_after >= 0 && t >= opt.vacate_after) || got_signal)) {
            fprintf(stderr, "starter: vacating: SIGTERM to job pid %ld\n", (long)job);
            kill(job, SIGTERM);
            term_at = t;
        }
        if ((term_at >= 0 && t - term_at >= opt.vacate_timeout) ||
            (opt.kill_after >= 0 && t >= opt.kill_after) || got_kill) {
            got_kill = 0;
            fprintf(stderr, "starter: SIGKILL to job pid %ld\n", (long)job);
            kill(job, SIGKILL);
            opt.kill_after = -1;
            term_at = -1e18; /* never again */
        }
        usleep(20000);
    }
}

int main(int argc, char **argv)
{
    enum { O_USER = 1, O_EXEC, O_SLOT, O_CLUSTER, O_PROC, O_MEM, O_CPUS, O_AD, O_MAD, O_ENV,
           O_VAC, O_VACTO, O_KILL, O_KEEP, O_STDIO, O_INPUT, O_MUS };
    static const struct option lopts[] = {
        {"user", required_argument, 0, O_USER},      {"execute", required_argument, 0, O_EXEC},
        {"slot", required_argument, 0, O_SLOT},      {"cluster", required_argument, 0, O_CLUSTER},
        {"proc", required_argument, 0, O_PROC},      {"memory", required_argument, 0, O_MEM},
        {"cpus", required_argument, 0, O_CPUS},      {"ad", required_argument, 0, O_AD},
        {"machine-ad", required_argument, 0, O_MAD}, {"env", required_argument, 0, O_ENV},
        {"vacate-after", required_argument, 0, O_VAC},
        {"vacate-timeout", required_argument, 0, O_VACTO},
        {"kill-after", required_argument, 0, O_KILL}, {"keep-sandbox", no_argument, 0, O_KEEP},
        {"stdio", required_argument, 0, O_STDIO},    {"input", required_argument, 0, O_INPUT},
        {"mount-under-scratch", required_argument, 0, O_MUS},
        {0, 0, 0, 0}};
    int c;
    while ((c = getopt_long(argc, argv, "+", lopts, NULL)) != -1) {
        switch (c) {
        case O_USER: opt.user = optarg; break;
        case O_EXEC: opt.execute = optarg; break;
        case O_SLOT: opt.slot = optarg; break;
        case O_CLUSTER: opt.cluster = parse_long(optarg, 0, LONG_MAX); break;
        case O_PROC: opt.proc = parse_long(optarg, 0, LONG_MAX); break;
        case O_MEM: opt.memory = parse_long(optarg, 1, 1L << 30); break;
        case O_CPUS: opt.cpus = parse_long(optarg, 1, 4096); break;
        case O_AD: if (opt.nad >= MAX_LINES) usage(); opt.ad[opt.nad++] = optarg; break;
        case O_MAD: if (opt.nmad >= MAX_LINES) usage(); opt.mad[opt.nmad++] = optarg; break;
        case O_ENV: if (opt.nenv >= MAX_ENV) usage(); opt.env[opt.nenv++] = optarg; break;
        case O_VAC: opt.vacate_after = parse_secs(optarg); break;
        case O_VACTO: opt.vacate_timeout = parse_secs(optarg); break;
        case O_KILL: opt.kill_after = parse_secs(optarg); break;
        case O_KEEP: opt.keep_sandbox = 1; break;
        case O_INPUT: if (opt.ninput >= MAX_LINES) usage(); opt.input[opt.ninput++] = optarg; break;
        case O_MUS: opt.mount_under_scratch = optarg; break;
        case O_STDIO:
            if (strcmp(optarg, "files") == 0) opt.stdio_files = 1;
            else if (strcmp(optarg, "inherit") == 0) opt.stdio_files = 0;
            else usage();
            break;
        default: usage();
        }
    }
    char **job_argv = argv + optind;
    if (!opt.user || optind >= argc || job_argv[0][0] == '\0')
        usage();
    if (!*opt.slot || strpbrk(opt.slot, "/\n\" ") || opt.execute[0] != '/')
        usage();
    if (geteuid() != 0)
        die(EX_SOFTWARE, "must run as root (euid 0)");

    struct passwd *p = getpwnam(opt.user);
    if (!p)
        die(EX_USAGE, "no such user: %s", opt.user);
    pw = *p;
    pw.pw_name = strdup(p->pw_name);
    pw.pw_dir = strdup(p->pw_dir);
    char host[256] = "";
    if (gethostname(host, sizeof host - 1) != 0)
        die(EX_SOFTWARE, "gethostname: %s", strerror(errno));

    /* Sandbox EXECUTE/dir_<pid>, 0700, owned by the user (parent dirs root 0755). */
    char tmp[PATH_MAX];
    xsnprintf(tmp, sizeof tmp, "%s", opt.execute);
    for (char *s = tmp + 1; *s; s++)
        if (*s == '/') {
            *s = '\0';
            mkdir_ok(tmp, 0755);
            *s = '/';
        }
    mkdir_ok(tmp, 0755);
    xsnprintf(sandbox, sizeof sandbox, "%s/dir_%ld", opt.execute, (long)getpid());
    parse_scratch_list(); /* before anything exists: a bad list is a usage error */
    if (mkdir(sandbox, 0700) != 0)
        die(EX_SOFTWARE, "mkdir %s: %s", sandbox, strerror(errno));
    int dfd = open(sandbox, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (dfd < 0 || fchown(dfd, pw.pw_uid, pw.pw_gid) != 0 || fchmod(dfd, 0700) != 0)
        die(EX_SOFTWARE, "chown %s: %s", sandbox, strerror(errno));
    close(dfd);
    main_pid = getpid();
    cleanup_armed = 1;
    fprintf(stderr, "starter: sandbox=%s\n", sandbox);

    write_ads(job_argv, host);
    write_inputs();
    make_scratch_dirs();
    build_env();
    setup_cgroups(host);

    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGHUP, &sa, NULL);
    sa.sa_handler = on_kill_request; /* SIGUSR2: hard-kill the job now (tests of SIGKILL) */
    sigaction(SIGUSR2, &sa, NULL);

    fflush(stderr);
    pid_t job = fork();
    if (job < 0)
        die(EX_SOFTWARE, "fork: %s", strerror(errno));
    if (job == 0)
        run_job_child(job_argv);

    struct rusage ru;
    int st = wait_job(job, &ru);
    /* the job and the children it reaped (QEMU is libvirtd's): what it cost this host */
    fprintf(stderr, "starter: job used cpu=%.2fs maxrss=%ldKiB\n",
            ru.ru_utime.tv_sec + ru.ru_stime.tv_sec + (ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6,
            ru.ru_maxrss);
    cleanup_armed = 0;
    remove_cgroups();
    if (!opt.keep_sandbox)
        remove_sandbox();
    if (WIFSIGNALED(st)) {
        fprintf(stderr, "starter: job killed by signal %d\n", WTERMSIG(st));
        return 128 + WTERMSIG(st);
    }
    fprintf(stderr, "starter: job exited with status %d\n", WEXITSTATUS(st));
    return WEXITSTATUS(st);
}
