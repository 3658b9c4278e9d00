/* SPDX-License-Identifier: Apache-2.0 */
/*
 * parse_duration.h: the one duration grammar of the project. The library reads
 * LOOPWATCH_REPORT_AFTER with it, the sidecar every duration setting and
 * the hold's `for=`, the Python package LOOPWATCH_INTERVAL and the runner's
 * --interval. Internal (not exported from the shared library).
 *
 *   duration = "0" | part { part }
 *   part     = number unit
 *   number   = digits [ "." [ digits ] ] | "." digits
 *   unit     = "ns" | "us" | "µs" | "μs" | "ms" | "s" | "m" | "h"
 *
 * as in "250ms", "1.5s", "1m30s", "2h". No sign, no spaces, a unit on every
 * number but a lone "0". Fractions below a nanosecond are dropped; a total
 * above INT64_MAX nanoseconds (292 years) is refused.
 * tests/data/durations.tsv is the table of cases every suite checks.
 */
#ifndef LOOPWATCH_PARSE_DURATION_H_
#define LOOPWATCH_PARSE_DURATION_H_

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Parses `len` bytes at `text` into *ns: 0, or -EINVAL when they are not a
 * duration (then *ns is unchanged). */
int lw_parse_duration(const char *text, size_t len, int64_t *ns);

#ifdef __cplusplus
}
#endif

#endif /* LOOPWATCH_PARSE_DURATION_H_ */
