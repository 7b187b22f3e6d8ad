/* SPDX-License-Identifier: MIT */
/*
 * The relay for stock QEMU (see relay.h and docs/qemu.md): what both
 * sides share. The rest, by concern:
 *
 *   relay-ctrl.c   the control lane: its reader thread and the line codec
 *   relay-pump.c   the byte pumps between QEMU's sockets and the lanes
 *   relay-chan.c   the channels: the private socket, telling QEMU's
 *                  channels apart (main, multifd id), drain, stop
 *   guard.c        the guardian process that rolls the source back if
 *                  the migrating process dies (shared with tlm checkpoint)
 *   relay-src.c    the source's flow (tlm_relay_migrate)
 *   relay-dst.c    the destination's flow (tlm_relay_receive)
 */

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include <json-c/json.h>

#include "relay-internal.h"

int tlm_relay_policy_parse(const char *s)
{
	if (!s)
		return -EINVAL;
	if (!strcmp(s, "qemu"))
		return TLM_RELAY_POLICY_QEMU;
	if (!strcmp(s, "one-pass"))
		return TLM_RELAY_POLICY_TLM;
	if (!strcmp(s, "auto-converge"))
		return TLM_RELAY_POLICY_AUTOCONVERGE;
	return -EINVAL;
}

const char *tlm_relay_policy_name(int policy)
{
	switch (policy) {
	case TLM_RELAY_POLICY_QEMU: return "qemu";
	case TLM_RELAY_POLICY_TLM: return "one-pass";
	case TLM_RELAY_POLICY_AUTOCONVERGE: return "auto-converge";
	default: return "?";
	}
}

void tlm__relay_res_err(struct tlm_relay_result *r, const char *fmt, ...)
{
	va_list ap;

	if (r->error[0])
		return;
	va_start(ap, fmt);
	vsnprintf(r->error, sizeof(r->error), fmt, ap);
	va_end(ap);
	tlm__err("%s", r->error);
}

bool tlm__relay_cancelled(volatile sig_atomic_t *c)
{
	return c && *c;
}

struct tlm_session_cfg tlm__relay_session_cfg(const char *transport, const char *targs,
					      const struct tlm_psk *psk, unsigned lanes,
					      int protect)
{
	struct tlm_session_cfg c = {
		.transport = transport ? transport : "tcp",
		.transport_args = targs, .n_lanes = lanes, .psk = psk,
		.timeout_ms = 10000, .protect = protect,
	};
	for (unsigned i = 1; i < TLM_MAX_LANES; i++)
		c.lane_modes[i] = TLM_MODE_BYTES;
	return c;
}

/* The capabilities the relay sets; the source gets them back as they were
 * once its migration has ended, so a later migration without tlm does not
 * stop in pre-switchover waiting for a migrate-continue nobody sends. */
const char *const tlm__relay_caps[N_SRC_CAPS] = {
	"multifd", "events", "pause-before-switchover", "auto-converge",
};

int tlm__relay_set_multifd(struct tlm_qmp *q, bool source, int policy, unsigned n,
			   uint64_t bw)
{
	bool vals[] = { true, true, true, policy == TLM_RELAY_POLICY_AUTOCONVERGE };
	struct json_object *p = json_object_new_object();
	int rc = tlm_qmp_set_caps(q, tlm__relay_caps, vals, source ? N_SRC_CAPS : N_DST_CAPS);

	if (rc) {
		json_object_put(p);
		return rc;
	}
	json_object_object_add(p, "multifd-channels", json_object_new_int((int)n));
	if (source) {
		json_object_object_add(p, "max-bandwidth", json_object_new_int64((int64_t)bw));
		json_object_object_add(p, "downtime-limit",
				       json_object_new_int64(DOWNTIME_DEFAULT_MS));
	}
	return tlm_qmp_set_params(q, p);
}
