/* SPDX-License-Identifier: Apache-2.0 */
#ifndef LOOPWATCH_SYSCALL_NAMES_H_
#define LOOPWATCH_SYSCALL_NAMES_H_

#ifdef __cplusplus
extern "C" {
#endif

/* Name of syscall `nr` on this architecture, or NULL if not in the table. */
const char *lw_syscall_name(long nr);

#ifdef __cplusplus
}
#endif

#endif  /* LOOPWATCH_SYSCALL_NAMES_H_ */
