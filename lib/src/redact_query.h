/* SPDX-License-Identifier: Apache-2.0 */
/*
 * redact_query.h: query string values out of text that came from an app.
 *
 * Activity labels, requests in flight and stacks often carry URLs, and
 * URLs often carry secrets in their query string (?api_key=..., ?token=...).
 * The sidecar passes every such text through this before it logs or serves
 * it, and the Python package before it records a request; both can be told
 * not to (LOOPWATCH_REDACT_QUERY=false). Internal, not exported.
 *
 * A query starts at a '?' that does not follow a space, and
 * is not followed by one; it runs to a space, a quote, a bracket, '<', '>' or
 * '#'. In it, the value of every name=value pair (separated by '&' or ';')
 * becomes "REDACTED"; names, and pairs without a value, stay:
 *
 *   GET /orders/42?api_key=s3cr3t&verbose   ->  GET /orders/42?api_key=REDACTED&verbose
 */
#ifndef LOOPWATCH_REDACT_QUERY_H_
#define LOOPWATCH_REDACT_QUERY_H_

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

#define LW_REDACTED "REDACTED"

/* Writes the redacted form of the `len` bytes at `in` to `out` (at most
 * `cap` bytes, not terminated) and returns its full length, which may be
 * more than `cap` (then call again with a larger buffer) and is at most
 * len * 9 (a one-byte value becomes eight). */
size_t lw_redact_query(const char *in, size_t len, char *out, size_t cap);

#ifdef __cplusplus
}
#endif

#endif /* LOOPWATCH_REDACT_QUERY_H_ */
