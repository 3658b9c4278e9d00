/* SPDX-License-Identifier: Apache-2.0 */
/* Query values out of app text; see redact_query.h. */
#include "redact_query.h"

#include <string.h>

static int is_space(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r'; }

/* Where a query (and a URL) ends. */
static int ends_query(char c) {
  return is_space(c) || c == '"' || c == '\'' || c == '<' || c == '>' || c == '`' ||
         c == '(' || c == ')' || c == '[' || c == ']' || c == '{' || c == '}' || c == '#';
}

struct sink {
  char *out;
  size_t cap, n;
};

static void put(struct sink *s, const char *p, size_t k) {
  if (s->n < s->cap) memcpy(s->out + s->n, p, k < s->cap - s->n ? k : s->cap - s->n);
  s->n += k;
}

size_t lw_redact_query(const char *in, size_t len, char *out, size_t cap) {
  struct sink s = {out, cap, 0};
  size_t i = 0;
  while (i < len) {
    const char c = in[i];
    const int starts = c == '?' && (i == 0 || !is_space(in[i - 1])) && i + 1 < len &&
                       !ends_query(in[i + 1]);
    put(&s, &c, 1);
    i++;
    if (!starts) continue;
    /* name[=value] pairs, separated by '&' or ';' */
    while (i < len && !ends_query(in[i])) {
      size_t k = i;
      while (k < len && !ends_query(in[k]) && in[k] != '=' && in[k] != '&' && in[k] != ';') k++;
      put(&s, in + i, k - i);
      i = k;
      if (i < len && in[i] == '=') {
        size_t v = i + 1;
        while (v < len && !ends_query(in[v]) && in[v] != '&' && in[v] != ';') v++;
        put(&s, "=", 1);
        if (v > i + 1) put(&s, LW_REDACTED, sizeof LW_REDACTED - 1);
        i = v;
      }
      if (i < len && (in[i] == '&' || in[i] == ';')) {
        put(&s, in + i, 1);
        i++;
      }
    }
  }
  return s.n;
}
