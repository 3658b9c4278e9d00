/* SPDX-License-Identifier: Apache-2.0 */
/* The duration grammar; see parse_duration.h. */
#include "parse_duration.h"

#include <errno.h>
#include <string.h>

typedef unsigned __int128 lw_u128;

static int is_digit(char c) { return c >= '0' && c <= '9'; }

/* A unit's length in ns, for the `len` bytes at `u`; 0 for no unit. */
static uint64_t unit_ns(const char *u, size_t len) {
  static const struct {
    const char *name;
    uint64_t ns;
  } units[] = {
      {"ns", 1},
      {"us", 1000},
      {"\xC2\xB5s", 1000}, /* µs, MICRO SIGN */
      {"\xCE\xBCs", 1000}, /* μs, GREEK SMALL LETTER MU */
      {"ms", 1000000},
      {"s", UINT64_C(1000000000)},
      {"m", UINT64_C(60000000000)},
      {"h", UINT64_C(3600000000000)},
  };
  for (size_t i = 0; i < sizeof units / sizeof units[0]; i++) {
    if (strlen(units[i].name) == len && memcmp(units[i].name, u, len) == 0) {
      return units[i].ns;
    }
  }
  return 0;
}

int lw_parse_duration(const char *text, size_t len, int64_t *ns) {
  if (len == 1 && text[0] == '0') {
    *ns = 0;
    return 0;
  }
  if (len == 0) return -EINVAL;
  const lw_u128 max = (lw_u128)INT64_MAX;
  lw_u128 total = 0;
  size_t i = 0;
  while (i < len) {
    lw_u128 whole = 0, frac = 0, scale = 1;
    size_t digits = 0;
    while (i < len && is_digit(text[i])) {
      whole = whole * 10 + (lw_u128)(text[i] - '0');
      if (whole > max) return -EINVAL;
      i++;
      digits++;
    }
    if (i < len && text[i] == '.') {
      i++;
      while (i < len && is_digit(text[i])) {
        if (scale < (lw_u128)UINT64_C(1000000000000000000)) { /* beyond: < 1 ns */
          frac = frac * 10 + (lw_u128)(text[i] - '0');
          scale *= 10;
        }
        i++;
        digits++;
      }
    }
    if (digits == 0) return -EINVAL;
    /* The unit runs to the next digit or dot (letters, or µ's UTF-8). */
    size_t u = i;
    while (i < len && !is_digit(text[i]) && text[i] != '.') i++;
    uint64_t unit = unit_ns(text + u, i - u);
    if (unit == 0) return -EINVAL;
    total += whole * unit + frac * unit / scale;
    if (total > max) return -EINVAL;
  }
  *ns = (int64_t)total;
  return 0;
}
