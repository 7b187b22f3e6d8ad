/* SPDX-License-Identifier: MIT */
/*
 * Region names and sizes in the session handshake (core/session.c, PARAMS
 * of wire version 2): an accepting side that describes its memory gets the
 * peer's names, refuses another name or size with an error that says which
 * region and why, and accepts a smaller region where it can resize.
 */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>

#include "tlm/tlm.h"

#define CHECK_COUNTS
#include "tests/check.h"

static char last_err[512];

static void log_fn(int level, const char *msg, void *arg)
{
	(void)arg;
	if (level == TLM_LOG_ERR)
		snprintf(last_err, sizeof(last_err), "%s", msg);
}

struct acc { struct tlm_listener *l; struct tlm_session *s; int rc; };

static void *accept_thread(void *arg)
{
	struct acc *a = arg;

	a->rc = tlm_accept(a->l, 3000, &a->s);
	return NULL;
}

/* Connects src to a listener described by dst; returns tlm_connect's code,
 * and the accepted session's config in *got when both sides agreed. */
static int handshake(const struct tlm_session_cfg *dst, const struct tlm_session_cfg *src,
		     struct tlm_session_cfg *got, char names[][TLM_REGION_NAME_MAX + 1])
{
	struct acc a = { 0 };
	struct tlm_session *s = NULL;
	pthread_t t;
	char port[16];
	int rc;

	rc = tlm_listen(dst, "127.0.0.1", "0", &a.l);
	if (rc)
		return rc;
	snprintf(port, sizeof(port), "%d", tlm_listener_port(a.l));
	pthread_create(&t, NULL, accept_thread, &a);
	rc = tlm_connect(src, "127.0.0.1", port, &s);
	pthread_join(t, NULL);
	if (rc == 0) {
		CHECK(a.rc == 0);
		if (a.rc == 0) {
			*got = *tlm_session_cfg_get(a.s);
			for (unsigned i = 0; i < got->n_regions; i++)
				snprintf(names[i], TLM_REGION_NAME_MAX + 1, "%s", got->region_name[i]);
		}
		tlm_session_close(s);
	} else {
		CHECK(a.rc != 0); /* the refused session never reaches the caller */
	}
	if (a.rc == 0)
		tlm_session_close(a.s);
	tlm_listener_close(a.l);
	return rc;
}

int main(void)
{
	struct tlm_psk psk;
	struct tlm_session_cfg src = { .transport = "tcp", .n_lanes = 1, .n_regions = 3,
				       .region_len = { 1 << 20, 64 << 10, 128 << 10 },
				       .region_name = { "pc.ram", "pc.bios",
							"/rom@etc/acpi/tables" },
				       .timeout_ms = 3000 };
	struct tlm_session_cfg dst, got;
	char names[TLM_MAX_REGIONS][TLM_REGION_NAME_MAX + 1];
	char longname[TLM_REGION_NAME_MAX + 2];

	tlm_set_log_fn(log_fn, NULL);
	CHECK(tlm_psk_random(&psk) == 0);
	src.psk = &psk;
	for (unsigned i = 1; i <= src.n_lanes; i++)
		src.lane_modes[i] = TLM_MODE_PAGES;

	/* A destination that describes nothing learns the names. */
	dst = (struct tlm_session_cfg){ .transport = "tcp", .psk = &psk, .timeout_ms = 3000 };
	CHECK(handshake(&dst, &src, &got, names) == 0);
	CHECK(got.n_regions == 3 && got.region_len[2] == 128 << 10);
	CHECK(!strcmp(names[0], "pc.ram") && !strcmp(names[2], "/rom@etc/acpi/tables"));

	/* The same names and sizes. */
	dst = src;
	CHECK(handshake(&dst, &src, &got, names) == 0);

	/* Another name: refused, naming the region and both names. */
	dst.region_name[1] = "pc.rom";
	last_err[0] = 0;
	CHECK(handshake(&dst, &src, &got, names) == -TLM_EPARAM);
	CHECK(strstr(last_err, "region 1") && strstr(last_err, "pc.rom") &&
	      strstr(last_err, "pc.bios"));

	/* Another size, no resizing: refused. */
	dst = src;
	dst.region_len[2] = 64 << 10;
	last_err[0] = 0;
	CHECK(handshake(&dst, &src, &got, names) == -TLM_EPARAM);
	CHECK(strstr(last_err, "region 2") && strstr(last_err, "131072"));

	/* A region this side can grow to: accepted; larger than that: refused. */
	dst.region_max[2] = 256 << 10;
	CHECK(handshake(&dst, &src, &got, names) == 0);
	CHECK(got.region_len[2] == 128 << 10);
	dst.region_max[2] = 96 << 10;
	CHECK(handshake(&dst, &src, &got, names) == -TLM_EPARAM);

	/* Another count: refused. */
	dst = src;
	dst.n_regions = 2;
	CHECK(handshake(&dst, &src, &got, names) == -TLM_EPARAM);

	/* An unnamed source region where a name is expected: refused. */
	dst = src;
	src.region_name[0] = NULL;
	CHECK(handshake(&dst, &src, &got, names) == -TLM_EPARAM);
	src.region_name[0] = "pc.ram";

	/* A name too long for the wire: the connecting side refuses to start. */
	memset(longname, 'n', sizeof(longname) - 1);
	longname[sizeof(longname) - 1] = 0;
	src.region_name[1] = longname;
	{
		struct tlm_session *s;
		CHECK(tlm_connect(&src, "127.0.0.1", "9", &s) == -ENAMETOOLONG);
	}

	if (test_failures)
		fprintf(stderr, "%d check(s) failed\n", test_failures);
	else
		printf("session regions: names, sizes and resizable regions checked\n");
	return test_failures ? 1 : 0;
}
