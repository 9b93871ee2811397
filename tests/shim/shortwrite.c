/* An LD_PRELOAD shim that makes the disk fill up under one file, for the durability tests.
 *
 * SHIM_MATCH      substring of the path (read from /proc/self/fd) of the files affected; others are untouched.
 * SHIM_FULL_FILE  the disk is full only while this file exists (unset: always); removing it makes room again.
 * SHIM_TEAR       while full, writes pass until one whose buffer contains this text: that write is cut right
 *                 after it and returns the short count, as write(2) does when the disk fills mid-write; every
 *                 later write to a matching file fails with ENOSPC. Unset: the first write while full is cut
 *                 in half. With neither SHIM_FULL_FILE nor SHIM_TEAR set the disk never fills.
 * SHIM_TRACE      a file that gets one line per write ("w <bytes>") and fsync/fdatasync ("s") on a matching
 *                 file, so a test can tell the order of writes, syncs and requests.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static ssize_t (*real_write)(int, const void *, size_t);
static int (*real_fsync)(int);
static int (*real_fdatasync)(int);
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static int torn;

static int matches(int fd) {
    const char *match = getenv("SHIM_MATCH");
    char link[64], path[4096];
    if (!match || !*match) return 0;
    snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
    ssize_t n = readlink(link, path, sizeof path - 1);
    if (n < 0) return 0;
    path[n] = 0;
    return strstr(path, match) != NULL;
}

static int full(void) {
    const char *flag = getenv("SHIM_FULL_FILE");
    const char *tear = getenv("SHIM_TEAR");
    struct stat st;
    if (!flag || !*flag) return tear && *tear;
    return stat(flag, &st) == 0;
}

static void trace(const char *line) {
    const char *path = getenv("SHIM_TRACE");
    if (!path || !*path) return;
    int fd = open(path, O_WRONLY | O_CREAT | O_APPEND, 0600);
    if (fd < 0) return;
    real_write(fd, line, strlen(line));
    close(fd);
}

static void resolve(void) {
    if (!real_write) real_write = (ssize_t (*)(int, const void *, size_t))dlsym(RTLD_NEXT, "write");
    if (!real_fsync) real_fsync = (int (*)(int))dlsym(RTLD_NEXT, "fsync");
    if (!real_fdatasync) real_fdatasync = (int (*)(int))dlsym(RTLD_NEXT, "fdatasync");
}

int fsync(int fd) {
    resolve();
    int r = real_fsync(fd);
    if (r == 0 && matches(fd)) trace("s\n");
    return r;
}

int fdatasync(int fd) {
    resolve();
    int r = real_fdatasync(fd);
    if (r == 0 && matches(fd)) trace("s\n");
    return r;
}

static ssize_t traced(int fd, const void *buf, size_t count) {
    ssize_t w = real_write(fd, buf, count);
    if (w > 0) {
        char line[64];
        snprintf(line, sizeof line, "w %zd\n", w);
        trace(line);
    }
    return w;
}

static const char *find(const char *hay, size_t n, const char *needle) {
    size_t m = strlen(needle);
    if (m == 0 || m > n) return NULL;
    for (size_t i = 0; i + m <= n; i++)
        if (memcmp(hay + i, needle, m) == 0) return hay + i;
    return NULL;
}

ssize_t write(int fd, const void *buf, size_t count) {
    resolve();
    if (!matches(fd)) return real_write(fd, buf, count);
    pthread_mutex_lock(&lock);
    if (!full()) {
        torn = 0;
        pthread_mutex_unlock(&lock);
        return traced(fd, buf, count);
    }
    if (torn) {
        pthread_mutex_unlock(&lock);
        errno = ENOSPC;
        return -1;
    }
    const char *tear = getenv("SHIM_TEAR");
    size_t keep = count / 2;
    if (tear && *tear) {
        const char *at = find((const char *)buf, count, tear);
        if (!at) {
            pthread_mutex_unlock(&lock);
            return traced(fd, buf, count);
        }
        keep = (size_t)(at - (const char *)buf) + strlen(tear);
        if (keep >= count) keep = count - 1;
    }
    torn = 1;
    pthread_mutex_unlock(&lock);
    if (keep == 0) {
        errno = ENOSPC;
        return -1;
    }
    return traced(fd, buf, keep);
}
