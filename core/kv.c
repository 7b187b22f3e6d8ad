/* SPDX-License-Identifier: MIT */
/*
 * transport_args, one syntax for every transport: items separated by
 * commas, each "key=value"; a value may be quoted ("..." or '...') to hold
 * commas, and the quotes are dropped; a leading "--" on an item is dropped
 * (so "--dpdk-args ..." reads as "dpdk-args ..."); spaces and empty items
 * between items are skipped. Each transport decides which keys it takes.
 */
#include <string.h>

#include "tlm-internal.h"

int tlm__kv_next(const char **pp, char *item, size_t cap)
{
	const char *p = *pp;
	size_t n = 0;
	char q = 0;

	if (!p)
		return 0;
	while (*p == ',' || *p == ' ')
		p++;
	if (!*p)
		return 0;
	for (; *p && (q || *p != ','); p++) {
		if (!q && (*p == '"' || *p == '\'')) {
			q = *p;
		} else if (q && *p == q) {
			q = 0;
		} else {
			if (n + 1 >= cap) {
				item[n] = 0;   /* what fitted, for messages */
				return -EINVAL;
			}
			item[n++] = *p;
		}
	}
	item[n] = 0;
	if (!strncmp(item, "--", 2))
		memmove(item, item + 2, n - 1);
	*pp = p;
	return 1;
}

char *tlm__kv_split(char *item)
{
	char *v = strchr(item, '=');

	if (!v)
		return NULL;
	*v = 0;
	return v + 1;
}
