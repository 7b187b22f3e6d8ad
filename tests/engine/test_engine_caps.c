/* SPDX-License-Identifier: MIT */
/*
 * The session's capabilities decide what the engine sends (TLM_CAP_*,
 * include/tlm/tlm.h). A source offering everything migrates stop-copy to a
 * destination, both in this process over tcp loopback, the destination
 * offering:
 *   all        zero pages go as ZERO records, the XBZRLE cache is set up,
 *              the device state arrives
 *   no-zero    no ZERO record (pages_zero 0), the content still arrives
 *   no-xbzrle  no XBZRLE cache on the source (extra_bytes below its size)
 *   no-dev     a source with device state fails with -EOPNOTSUPP, and the
 *              destination does not complete
 * In every run that completes, the destination's memory equals the source's.
 */
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#define CHECK_COUNTS
#include "tlm/engine.h"
#include "tlm/memsrc.h"
#include "tests/check.h"

#define MEM   (4u << 20)
#define CACHE (8u << 20)
#define PS    4096u

static const char devstate[] = "QEVM device state";

struct dest {
	uint32_t caps;
	struct tlm_psk *psk;
	struct tlm_listener *li;
	uint8_t *mem;
	struct tlm_dest_stats st;
	void *dev;
	size_t devlen;
	int err;
};

static void *dest_thread(void *arg)
{
	struct dest *d = arg;
	struct tlm_region reg = { .base = d->mem, .len = MEM, .name = "ram" };
	struct tlm_session *s;

	d->err = tlm_accept(d->li, 10000, &s);
	if (d->err)
		return NULL;
	d->err = tlm_migrate_dest(s, &reg, 1, &d->dev, &d->devlen, &d->st);
	tlm_session_close(s);
	return NULL;
}

/* The local memory source, plus device state. */
static const struct tlm_memsrc_ops *inner_ops;
static int with_dev(void *ctx, const void **buf, size_t *len)
{
	(void)ctx;
	*buf = devstate;
	*len = sizeof(devstate);
	return 0;
}

static int migrate(uint32_t dest_caps, struct tlm_migrate_stats *st, struct dest *d)
{
	size_t size = MEM;
	struct tlm_session_cfg cfg = { .transport = "tcp", .n_lanes = 2, .n_regions = 1,
				       .caps = TLM_CAP_ALL };
	struct tlm_migrate_opts o = { .policy = TLM_POLICY_STOPCOPY, .zero_pages = true,
				      .xbzrle_cache = CACHE, .copy_pages = true };
	static struct tlm_memsrc_ops ops;
	struct tlm_memsrc src;
	struct tlm_local *m;
	struct tlm_session *s;
	struct tlm_psk psk;
	char port[16];
	pthread_t t;
	uint8_t *base;
	int err;

	CHECK_OK(tlm_psk_random(&psk));
	CHECK_OK(tlm_local_create(&size, 1, TLM_TRACK_AUTO, &m));
	src = *tlm_local_memsrc(m);
	inner_ops = src.ops;
	ops = *inner_ops;
	ops.device_state = with_dev;
	src.ops = &ops;
	{
		const struct tlm_region *r;
		unsigned n;

		CHECK_OK(src.ops->regions(src.ctx, &r, &n));
		base = r[0].base;
	}
	/* the first half written, the second left zero */
	for (size_t i = 0; i < MEM / 2; i++)
		base[i] = (uint8_t)(i * 7 + (i >> 12));

	memset(d, 0, sizeof(*d));
	d->caps = dest_caps;
	d->psk = &psk;
	d->mem = mmap(NULL, MEM, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	CHECK(d->mem != MAP_FAILED);
	cfg.psk = &psk;
	cfg.lane_modes[1] = cfg.lane_modes[2] = TLM_MODE_PAGES;
	cfg.region_len[0] = MEM;
	{
		struct tlm_session_cfg lcfg = cfg;

		lcfg.caps = dest_caps;
		CHECK_OK(tlm_listen(&lcfg, "127.0.0.1", "0", &d->li));
	}
	snprintf(port, sizeof(port), "%d", tlm_listener_port(d->li));
	CHECK(pthread_create(&t, NULL, dest_thread, d) == 0);
	CHECK_OK(tlm_connect(&cfg, "127.0.0.1", port, &s));
	CHECK(tlm_session_cfg_get(s)->caps == (TLM_CAP_ALL & dest_caps),
	      "negotiated 0x%x", tlm_session_cfg_get(s)->caps);
	err = tlm_migrate_source(s, &src, &o, st);
	tlm_session_close(s);
	pthread_join(t, NULL);
	tlm_listener_close(d->li);
	if (!err && !d->err)
		CHECK(memcmp(base, d->mem, MEM) == 0, "the destination's memory differs");
	tlm_local_destroy(m);
	munmap(d->mem, MEM);
	return err;
}

int main(void)
{
	struct tlm_migrate_stats st;
	struct dest d;
	int err;

	/* all: zero records, the cache, the device state */
	err = migrate(TLM_CAP_ALL, &st, &d);
	CHECK(err == 0 && st.completed && d.err == 0, "all: %s / %s", st.why, d.st.why);
	CHECK(st.pages_zero >= MEM / 2 / PS, "all: %llu zero records",
	      (unsigned long long)st.pages_zero);
	CHECK(st.extra_bytes >= CACHE / 2, "all: no XBZRLE cache (%llu extra bytes)",
	      (unsigned long long)st.extra_bytes);
	CHECK(d.devlen == sizeof(devstate) && !memcmp(d.dev, devstate, sizeof(devstate)));
	free(d.dev);
	tlm_migrate_stats_free(&st);

	/* no-zero: every page in full */
	err = migrate(TLM_CAP_XBZRLE | TLM_CAP_DEVSTATE, &st, &d);
	CHECK(err == 0 && st.completed && d.err == 0, "no-zero: %s / %s", st.why, d.st.why);
	CHECK(st.pages_zero == 0, "no-zero: %llu zero records", (unsigned long long)st.pages_zero);
	CHECK(st.pages_chk == MEM / PS, "no-zero: %llu pages", (unsigned long long)st.pages_chk);
	free(d.dev);
	tlm_migrate_stats_free(&st);

	/* no-xbzrle: no cache, so no delta can be sent */
	err = migrate(TLM_CAP_ZERO_PAGE | TLM_CAP_DEVSTATE, &st, &d);
	CHECK(err == 0 && st.completed && d.err == 0, "no-xbzrle: %s / %s", st.why, d.st.why);
	CHECK(st.extra_bytes < CACHE / 2 && st.pages_xbzrle == 0,
	      "no-xbzrle: %llu extra bytes", (unsigned long long)st.extra_bytes);
	CHECK(st.pages_zero >= MEM / 2 / PS);
	free(d.dev);
	tlm_migrate_stats_free(&st);

	/* no-dev: the source has device state the destination does not take */
	err = migrate(TLM_CAP_ZERO_PAGE | TLM_CAP_XBZRLE, &st, &d);
	CHECK(err == -EOPNOTSUPP && !st.completed, "no-dev: %d (%s)", err, st.why);
	CHECK(d.err != 0 && !d.st.completed, "no-dev: the destination completed");
	free(d.dev);
	tlm_migrate_stats_free(&st);

	if (test_failures) {
		fprintf(stderr, "%d check(s) failed\n", test_failures);
		return 1;
	}
	printf("capabilities: all, no-zero, no-xbzrle, no-dev as negotiated\n");
	return 0;
}
