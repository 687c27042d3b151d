/*
 * An LD_PRELOAD shim that makes file I/O fail for real, for the audit fault tests.
 *
 * While the file named by $IOERR_TRIGGER exists, each of its lines
 *
 *     OP SUFFIX ERRNO [FROM]   e.g.  "fsync -wal EIO"  "write .db ENOSPC"  "read .db EIO 4096"
 *
 * makes OP fail with -1 and errno ERRNO (EIO or ENOSPC) on every file
 * descriptor whose path (readlink /proc/self/fd/N) ends in SUFFIX, for
 * reads and writes only at file offsets from FROM on (default 0). OP is
 * `fsync` (fsync, fdatasync), `write` (write, pwrite, pwrite64) or `read`
 * (read, pread, pread64). Removing the file ends the fault. Each injected
 * failure appends "OP PATH" to the file named by $IOERR_LOG, so a test can
 * show the fault really happened. The shim's own I/O uses raw system calls.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <unistd.h>

static int sys_open(const char *path, int flags) {
    return (int)syscall(SYS_openat, AT_FDCWD, path, flags, 0644);
}

/* The errno to fail `op` on `fd` at `offset` (-1: the file position) with, 0 for none. */
static int fault_for(const char *op, int fd, long long offset, char *path, size_t size) {
    const char *trigger = getenv("IOERR_TRIGGER");
    if (trigger == NULL || fd < 0) {
        return 0;
    }
    int saved = errno;
    int tfd = sys_open(trigger, O_RDONLY | O_CLOEXEC);
    if (tfd < 0) {
        errno = saved;
        return 0;
    }
    char spec[1024];
    ssize_t got = syscall(SYS_read, tfd, spec, sizeof spec - 1);
    syscall(SYS_close, tfd);
    if (got <= 0) {
        errno = saved;
        return 0;
    }
    spec[got] = '\0';
    char link[64];
    snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
    ssize_t len = syscall(SYS_readlinkat, AT_FDCWD, link, path, size - 1);
    errno = saved;
    if (len <= 0) {
        return 0;
    }
    path[len] = '\0';
    char *save = NULL;
    for (char *line = strtok_r(spec, "\n", &save); line != NULL; line = strtok_r(NULL, "\n", &save)) {
        char want[16], suffix[256], code[16];
        long long from = 0;
        if (sscanf(line, "%15s %255s %15s %lld", want, suffix, code, &from) < 3 || strcmp(want, op) != 0) {
            continue;
        }
        if (from > 0) {
            long long at = offset >= 0 ? offset : (long long)syscall(SYS_lseek, fd, 0, SEEK_CUR);
            if (at < from) {
                continue;
            }
        }
        size_t slen = strlen(suffix);
        if ((size_t)len < slen || strcmp(path + len - slen, suffix) != 0) {
            continue;
        }
        return strcmp(code, "ENOSPC") == 0 ? ENOSPC : EIO;
    }
    return 0;
}

static void note(const char *op, const char *path) {
    const char *log = getenv("IOERR_LOG");
    if (log == NULL) {
        return;
    }
    int lfd = sys_open(log, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC);
    if (lfd < 0) {
        return;
    }
    char line[4200];
    int n = snprintf(line, sizeof line, "%s %s\n", op, path);
    if (n > 0) {
        syscall(SYS_write, lfd, line, (size_t)n < sizeof line ? (size_t)n : sizeof line - 1);
    }
    syscall(SYS_close, lfd);
}

/* Fails the call (returns nonzero, errno set) when a fault is configured for it. */
static int failing(const char *op, int fd, long long offset) {
    char path[4096];
    int code = fault_for(op, fd, offset, path, sizeof path);
    if (code == 0) {
        return 0;
    }
    note(op, path);
    errno = code;
    return 1;
}

#define NEXT(name) ((name##_fn)dlsym(RTLD_NEXT, #name))

typedef int (*fsync_fn)(int);
typedef int (*fdatasync_fn)(int);
typedef ssize_t (*write_fn)(int, const void *, size_t);
typedef ssize_t (*pwrite_fn)(int, const void *, size_t, off_t);
typedef ssize_t (*pwrite64_fn)(int, const void *, size_t, off_t);
typedef ssize_t (*read_fn)(int, void *, size_t);
typedef ssize_t (*pread_fn)(int, void *, size_t, off_t);
typedef ssize_t (*pread64_fn)(int, void *, size_t, off_t);

int fsync(int fd) {
    return failing("fsync", fd, -1) ? -1 : NEXT(fsync)(fd);
}

int fdatasync(int fd) {
    return failing("fsync", fd, -1) ? -1 : NEXT(fdatasync)(fd);
}

ssize_t write(int fd, const void *buf, size_t count) {
    return failing("write", fd, -1) ? -1 : NEXT(write)(fd, buf, count);
}

ssize_t pwrite(int fd, const void *buf, size_t count, off_t offset) {
    return failing("write", fd, offset) ? -1 : NEXT(pwrite)(fd, buf, count, offset);
}

ssize_t pwrite64(int fd, const void *buf, size_t count, off_t offset) {
    return failing("write", fd, offset) ? -1 : NEXT(pwrite64)(fd, buf, count, offset);
}

ssize_t read(int fd, void *buf, size_t count) {
    return failing("read", fd, -1) ? -1 : NEXT(read)(fd, buf, count);
}

ssize_t pread(int fd, void *buf, size_t count, off_t offset) {
    return failing("read", fd, offset) ? -1 : NEXT(pread)(fd, buf, count, offset);
}

ssize_t pread64(int fd, void *buf, size_t count, off_t offset) {
    return failing("read", fd, offset) ? -1 : NEXT(pread64)(fd, buf, count, offset);
}
