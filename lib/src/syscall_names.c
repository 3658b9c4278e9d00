/* SPDX-License-Identifier: Apache-2.0 */
/* Names of the syscalls a stalled loop thread is likely to sleep in, built
 * from this architecture's own <sys/syscall.h> numbers. */
#include "syscall_names.h"

#include <stddef.h>
#include <sys/syscall.h>

struct lw_syscall_name {
  long nr;
  const char *name;
};

#define LW_X(n) {SYS_##n, #n},
static const struct lw_syscall_name kNames[] = {
#ifdef SYS_read
    LW_X(read)
#endif
#ifdef SYS_write
    LW_X(write)
#endif
#ifdef SYS_open
    LW_X(open)
#endif
#ifdef SYS_openat
    LW_X(openat)
#endif
#ifdef SYS_close
    LW_X(close)
#endif
#ifdef SYS_poll
    LW_X(poll)
#endif
#ifdef SYS_ppoll
    LW_X(ppoll)
#endif
#ifdef SYS_select
    LW_X(select)
#endif
#ifdef SYS_pselect6
    LW_X(pselect6)
#endif
#ifdef SYS_epoll_wait
    LW_X(epoll_wait)
#endif
#ifdef SYS_epoll_pwait
    LW_X(epoll_pwait)
#endif
#ifdef SYS_epoll_pwait2
    LW_X(epoll_pwait2)
#endif
#ifdef SYS_nanosleep
    LW_X(nanosleep)
#endif
#ifdef SYS_clock_nanosleep
    LW_X(clock_nanosleep)
#endif
#ifdef SYS_futex
    LW_X(futex)
#endif
#ifdef SYS_futex_waitv
    LW_X(futex_waitv)
#endif
#ifdef SYS_recvfrom
    LW_X(recvfrom)
#endif
#ifdef SYS_recvmsg
    LW_X(recvmsg)
#endif
#ifdef SYS_recvmmsg
    LW_X(recvmmsg)
#endif
#ifdef SYS_sendto
    LW_X(sendto)
#endif
#ifdef SYS_sendmsg
    LW_X(sendmsg)
#endif
#ifdef SYS_sendmmsg
    LW_X(sendmmsg)
#endif
#ifdef SYS_connect
    LW_X(connect)
#endif
#ifdef SYS_accept
    LW_X(accept)
#endif
#ifdef SYS_accept4
    LW_X(accept4)
#endif
#ifdef SYS_wait4
    LW_X(wait4)
#endif
#ifdef SYS_waitid
    LW_X(waitid)
#endif
#ifdef SYS_flock
    LW_X(flock)
#endif
#ifdef SYS_fcntl
    LW_X(fcntl)
#endif
#ifdef SYS_fsync
    LW_X(fsync)
#endif
#ifdef SYS_fdatasync
    LW_X(fdatasync)
#endif
#ifdef SYS_sync
    LW_X(sync)
#endif
#ifdef SYS_readv
    LW_X(readv)
#endif
#ifdef SYS_writev
    LW_X(writev)
#endif
#ifdef SYS_pread64
    LW_X(pread64)
#endif
#ifdef SYS_pwrite64
    LW_X(pwrite64)
#endif
#ifdef SYS_io_getevents
    LW_X(io_getevents)
#endif
#ifdef SYS_io_uring_enter
    LW_X(io_uring_enter)
#endif
#ifdef SYS_pause
    LW_X(pause)
#endif
#ifdef SYS_rt_sigsuspend
    LW_X(rt_sigsuspend)
#endif
#ifdef SYS_rt_sigtimedwait
    LW_X(rt_sigtimedwait)
#endif
#ifdef SYS_msgrcv
    LW_X(msgrcv)
#endif
#ifdef SYS_semop
    LW_X(semop)
#endif
#ifdef SYS_semtimedop
    LW_X(semtimedop)
#endif
#ifdef SYS_sendfile
    LW_X(sendfile)
#endif
#ifdef SYS_splice
    LW_X(splice)
#endif
#ifdef SYS_getrandom
    LW_X(getrandom)
#endif
#ifdef SYS_mmap
    LW_X(mmap)
#endif
#ifdef SYS_munmap
    LW_X(munmap)
#endif
#ifdef SYS_madvise
    LW_X(madvise)
#endif
#ifdef SYS_newfstatat
    LW_X(newfstatat)
#endif
#ifdef SYS_statx
    LW_X(statx)
#endif
#ifdef SYS_getdents64
    LW_X(getdents64)
#endif
#ifdef SYS_unlinkat
    LW_X(unlinkat)
#endif
#ifdef SYS_renameat2
    LW_X(renameat2)
#endif
#ifdef SYS_execve
    LW_X(execve)
#endif
#ifdef SYS_clone
    LW_X(clone)
#endif
#ifdef SYS_clone3
    LW_X(clone3)
#endif
#ifdef SYS_ioctl
    LW_X(ioctl)
#endif
#ifdef SYS_sched_yield
    LW_X(sched_yield)
#endif
#ifdef SYS_ftruncate
    LW_X(ftruncate)
#endif
#ifdef SYS_fallocate
    LW_X(fallocate)
#endif
#ifdef SYS_msync
    LW_X(msync)
#endif
#ifdef SYS_mq_timedreceive
    LW_X(mq_timedreceive)
#endif
#ifdef SYS_shutdown
    LW_X(shutdown)
#endif
};
#undef LW_X

const char *lw_syscall_name(long nr) {
  for (size_t i = 0; i < sizeof(kNames) / sizeof(kNames[0]); i++) {
    if (kNames[i].nr == nr) return kNames[i].name;
  }
  return NULL;
}
