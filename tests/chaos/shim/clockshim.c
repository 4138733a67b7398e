/* clockshim: offsets one process's wall clock and CLOCK_MONOTONIC, for tests/chaos.
 *
 * LD_PRELOAD=clockshim.so CHAOS_CLOCK_FILE=PATH python ...
 *
 * PATH holds two native doubles the test rewrites at any time (mmap'd, read on
 * every call): [0] seconds added to the wall clock (CLOCK_REALTIME*,
 * gettimeofday, time), [1] seconds added to CLOCK_MONOTONIC* (only ever made
 * smaller: a host-suspend-like pause is "stop the process, then take the pause
 * off its CLOCK_MONOTONIC", so the process reads the same monotonic time
 * before and after while CLOCK_BOOTTIME moved on). CLOCK_BOOTTIME is never
 * touched: it is the clock every stamp of the campaign is compared on.
 *
 * Why not libfaketime: 0.9.10 makes Python 3.11's time.sleep fail (EINVAL from
 * clock_nanosleep on CLOCK_MONOTONIC). Absolute sleeps and waits here are
 * translated back to the kernel's clock, so a shifted process still sleeps
 * exactly as long as it asked.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <fcntl.h>
#include <pthread.h>
#include <semaphore.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

static volatile double *offsets;
static double zero[2];

static volatile double *table(void) {
    if (offsets == NULL) {
        const char *path = getenv("CHAOS_CLOCK_FILE");
        void *map = MAP_FAILED;
        if (path != NULL) {
            int fd = open(path, O_RDONLY);
            if (fd >= 0) {
                map = mmap(NULL, 2 * sizeof(double), PROT_READ, MAP_SHARED, fd, 0);
                close(fd);
            }
        }
        offsets = map == MAP_FAILED ? zero : (volatile double *)map;
    }
    return offsets;
}

static int is_wall(clockid_t c) { return c == CLOCK_REALTIME || c == CLOCK_REALTIME_COARSE; }
static int is_mono(clockid_t c) {
    return c == CLOCK_MONOTONIC || c == CLOCK_MONOTONIC_COARSE || c == CLOCK_MONOTONIC_RAW;
}
static double offset_of(clockid_t c) {
    return is_wall(c) ? table()[0] : is_mono(c) ? table()[1] : 0.0;
}

static void shift(struct timespec *ts, double seconds) {
    long long ns = (long long)ts->tv_sec * 1000000000LL + ts->tv_nsec + (long long)(seconds * 1e9);
    if (ns < 0) ns = 0;
    ts->tv_sec = ns / 1000000000LL;
    ts->tv_nsec = ns % 1000000000LL;
}

/* The next definition of NAME (libc's), looked up once. */
#define REAL(name) \
    static __typeof__(&name) real_##name; \
    if (real_##name == NULL) real_##name = (__typeof__(&name))dlsym(RTLD_NEXT, #name)

int clock_gettime(clockid_t clk, struct timespec *ts) {
    REAL(clock_gettime);
    int rc = real_clock_gettime(clk, ts);
    double off = offset_of(clk);
    if (rc == 0 && off != 0.0) shift(ts, off);
    return rc;
}

int gettimeofday(struct timeval *restrict tv, void *restrict tz) {
    REAL(gettimeofday);
    int rc = real_gettimeofday(tv, tz);
    if (rc == 0 && table()[0] != 0.0) {
        struct timespec ts = {tv->tv_sec, tv->tv_usec * 1000};
        shift(&ts, table()[0]);
        tv->tv_sec = ts.tv_sec;
        tv->tv_usec = ts.tv_nsec / 1000;
    }
    return rc;
}

time_t time(time_t *out) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    if (out != NULL) *out = ts.tv_sec;
    return ts.tv_sec;
}

/* An absolute deadline the process computed on its shifted clock, on the kernel's. */
static const struct timespec *kernel_deadline(clockid_t clk, const struct timespec *abs, struct timespec *buf) {
    double off = offset_of(clk);
    if (abs == NULL || off == 0.0) return abs;
    *buf = *abs;
    shift(buf, -off);
    return buf;
}

int clock_nanosleep(clockid_t clk, int flags, const struct timespec *req, struct timespec *rem) {
    REAL(clock_nanosleep);
    struct timespec buf;
    if (flags & TIMER_ABSTIME) req = kernel_deadline(clk, req, &buf);
    return real_clock_nanosleep(clk, flags, req, rem);
}

int sem_clockwait(sem_t *sem, clockid_t clk, const struct timespec *abs) {
    REAL(sem_clockwait);
    struct timespec buf;
    return real_sem_clockwait(sem, clk, kernel_deadline(clk, abs, &buf));
}

int sem_timedwait(sem_t *restrict sem, const struct timespec *restrict abs) {
    REAL(sem_timedwait);
    struct timespec buf;
    return real_sem_timedwait(sem, kernel_deadline(CLOCK_REALTIME, abs, &buf));
}

int pthread_cond_clockwait(pthread_cond_t *restrict c, pthread_mutex_t *restrict m, clockid_t clk,
                           const struct timespec *restrict abs) {
    REAL(pthread_cond_clockwait);
    struct timespec buf;
    return real_pthread_cond_clockwait(c, m, clk, kernel_deadline(clk, abs, &buf));
}

int pthread_cond_timedwait(pthread_cond_t *restrict c, pthread_mutex_t *restrict m,
                           const struct timespec *restrict abs) {
    REAL(pthread_cond_timedwait);
    /* glibc keeps the condvar's clock in bit 1 of __wrefs (0 realtime, 1 monotonic);
       CPython's and gRPC's condvars are monotonic ones. */
    clockid_t clk = (c->__data.__wrefs & 2) ? CLOCK_MONOTONIC : CLOCK_REALTIME;
    struct timespec buf;
    return real_pthread_cond_timedwait(c, m, kernel_deadline(clk, abs, &buf));
}
