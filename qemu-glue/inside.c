/* SPDX-License-Identifier: MIT */
/*
 * Driving a QEMU that runs the tlm engine (inside.h).
 *
 *   source                              destination
 *   detect (query-qmp-schema)           detect
 *                                       migrate-incoming uri=tlm:ADDR:PORT?..
 *   migrate uri=tlm:HOST:PORT?...  -->  (the QEMUs' own session)
 *   query-migrate every 200 ms          query-migrate every 200 ms
 *   completed | failed | cancelled      completed (VM running) | failed
 *
 * A cancel request on the source becomes migrate_cancel; QEMU's engine
 * then resumes the VM. The destination keeps waiting after a failed
 * session (the next one rewrites RAM whole), so receive gives up only at
 * its timeout.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include <json-c/json.h>

#include "inside.h"
#include "tlm-internal.h"

int tlm_inside_detect(struct tlm_qmp *q)
{
	struct json_object *r;
	const char *s;
	int err, found;

	err = tlm_qmp_exec(q, "query-qmp-schema", NULL, &r, TLM_QMP_TIMEOUT_MS);
	if (err)
		return err;
	/* Member names survive the schema's name masking: the engine's
	 * section of query-migrate is the only one with this member. */
	s = json_object_to_json_string_ext(r, JSON_C_TO_STRING_PLAIN);
	found = s && strstr(s, "\"engine-downtime\"") != NULL;
	json_object_put(r);
	return found;
}

static void str_of(struct json_object *o, const char *key, char *out, size_t cap)
{
	const char *v = tlm_qmp_get_str(o, key);

	snprintf(out, cap, "%s", v ? v : "");
}

int tlm_inside_query(struct tlm_qmp *q, struct tlm_inside_stat *st)
{
	struct json_object *r, *t, *v;
	int err;

	memset(st, 0, sizeof(*st));
	st->engine_downtime_ms = -1;
	err = tlm_qmp_query_migrate(q, &st->mig);
	if (err)
		return err;
	err = tlm_qmp_exec(q, "query-migrate", NULL, &r, TLM_QMP_TIMEOUT_MS);
	if (err)
		return err;
	if (json_object_object_get_ex(r, "tlm", &t)) {
		st->has_tlm = true;
		str_of(t, "transport", st->transport, sizeof(st->transport));
		str_of(t, "policy", st->policy, sizeof(st->policy));
		st->chk_lanes = (unsigned)tlm_qmp_get_u64(t, "chk-lanes");
		st->ps_lanes = (unsigned)tlm_qmp_get_u64(t, "ps-lanes");
		st->epochs = tlm_qmp_get_u64(t, "epochs");
		st->chk_pages = tlm_qmp_get_u64(t, "chk-pages");
		st->ps_pages = tlm_qmp_get_u64(t, "ps-pages");
		st->chk_bytes = tlm_qmp_get_u64(t, "chk-bytes");
		st->ps_bytes = tlm_qmp_get_u64(t, "ps-bytes");
		st->zero_pages = tlm_qmp_get_u64(t, "zero-pages");
		if (json_object_object_get_ex(t, "zero-copy", &v))
			st->zero_copy = json_object_get_boolean(v);
		if (json_object_object_get_ex(t, "engine-downtime", &v))
			st->engine_downtime_ms = json_object_get_int64(v);
		if (json_object_object_get_ex(t, "lane-bytes", &v) &&
		    json_object_is_type(v, json_type_array)) {
			size_t n = json_object_array_length(v);

			for (size_t i = 0; i < n && i < TLM_MAX_LANES; i++)
				st->lane_bytes[i] = (uint64_t)json_object_get_int64(
					json_object_array_get_idx(v, i));
			st->n_lanes = n < TLM_MAX_LANES ? (unsigned)n : TLM_MAX_LANES;
		}
	}
	json_object_put(r);
	return 0;
}

static bool uri_safe(const char *s)
{
	return !s || !strpbrk(s, "&?# \t\n");
}

int tlm_inside_uri(const struct tlm_inside_opts *o, bool source, char *out, size_t cap,
		   char *why, size_t whylen)
{
	bool v6 = o->host && strchr(o->host, ':');
	int n;

	if (!uri_safe(o->psk_path) || !uri_safe(o->transport_args) || !uri_safe(o->transport)) {
		snprintf(why, whylen, "the key file's path and the transport args must not hold "
			 "'&', '?', '#' or spaces to go into QEMU's tlm: URI");
		return -EINVAL;
	}
	n = snprintf(out, cap, "tlm:%s%s%s:%s?psk=%s&transport=%s", v6 ? "[" : "",
		     o->host && *o->host ? o->host : "0.0.0.0", v6 ? "]" : "", o->port,
		     o->psk_path, o->transport ? o->transport : "tcp");
	if (n > 0 && (size_t)n < cap && o->transport_args && *o->transport_args)
		n += snprintf(out + n, cap - (size_t)n, "&args=%s", o->transport_args);
	if (n > 0 && (size_t)n < cap && o->protect != TLM_PROTECT_ENCRYPT && tlm_protect_name(o->protect))
		n += snprintf(out + n, cap - (size_t)n, "&protect=%s", tlm_protect_name(o->protect));
	if (n > 0 && (size_t)n < cap && o->peer_timeout_ms > 0)
		n += snprintf(out + n, cap - (size_t)n, "&timeout-ms=%d", o->peer_timeout_ms);
	if (source && n > 0 && (size_t)n < cap) {
		n += snprintf(out + n, cap - (size_t)n, "&chk=%u&ps=%u&policy=%s",
			      o->chk_lanes ? o->chk_lanes : 1, o->ps_lanes ? o->ps_lanes : 1,
			      o->policy ? o->policy : "tlm");
		if (o->epoch_ms && (size_t)n < cap)
			n += snprintf(out + n, cap - (size_t)n, "&epoch-ms=%u", o->epoch_ms);
	}
	if (n < 0 || (size_t)n >= cap) {
		snprintf(why, whylen, "the tlm: URI is too long");
		return -ENAMETOOLONG;
	}
	return 0;
}

/* Follows query-migrate until one of until[]; progress on the way. */
static int follow(const struct tlm_inside_opts *o, const char *const *until, bool source,
		  struct tlm_inside_result *r)
{
	uint64_t t0 = tlm__now_ms(), deadline = t0 + (uint64_t)o->timeout_ms;
	bool cancelled = false;
	int err;

	for (;;) {
		err = tlm_inside_query(o->qmp, &r->st);
		if (err) {
			snprintf(r->error, sizeof(r->error), "query-migrate: %s",
				 tlm_qmp_last_error(o->qmp));
			return err;
		}
		/* Like QEMU's own completion, the figures settle a moment later. */
		if (!strcmp(r->st.mig.status, "completed") && source && !r->st.mig.total_time_ms) {
			nanosleep(&(struct timespec){ .tv_nsec = 20 * 1000000 }, NULL);
			continue;
		}
		if (o->progress)
			o->progress(&r->st, o->progress_arg);
		for (unsigned i = 0; until[i]; i++)
			if (!strcmp(r->st.mig.status, until[i])) {
				r->wall_ms = tlm__now_ms() - t0;
				return 0;
			}
		if (source && !cancelled && ((o->cancel && *o->cancel) || !tlm__left_ms(deadline))) {
			cancelled = true;
			snprintf(r->error, sizeof(r->error), "%s",
				 o->cancel && *o->cancel ? "cancelled on request" :
				 "timed out; cancelled");
			(void)tlm_qmp_migrate_cancel(o->qmp);
			deadline = tlm__now_ms() + 30000;
		} else if (!tlm__left_ms(deadline) || (!source && o->cancel && *o->cancel)) {
			snprintf(r->error, sizeof(r->error), "migration still '%s' after %d ms",
				 r->st.mig.status, o->timeout_ms);
			return -ETIMEDOUT;
		}
		nanosleep(&(struct timespec){ .tv_nsec = 200 * 1000000 }, NULL);
	}
}

int tlm_inside_migrate(const struct tlm_inside_opts *o, struct tlm_inside_result *r)
{
	static const char *const until[] = { "completed", "failed", "cancelled", NULL };
	char uri[1024];
	int err;

	memset(r, 0, sizeof(*r));
	err = tlm_inside_uri(o, true, uri, sizeof(uri), r->error, sizeof(r->error));
	if (err)
		return err;
	err = tlm_qmp_migrate(o->qmp, uri);
	if (err) {
		snprintf(r->error, sizeof(r->error), "QEMU refused the migration: %s",
			 tlm_qmp_last_error(o->qmp));
		return err;
	}
	err = follow(o, until, true, r);
	(void)tlm_qmp_query_status(o->qmp, r->vm_status, sizeof(r->vm_status), NULL);
	if (err)
		return err;
	r->completed = !strcmp(r->st.mig.status, "completed");
	if (!r->completed && r->st.mig.error_desc[0])
		snprintf(r->error, sizeof(r->error), "%s", r->st.mig.error_desc);
	else if (!r->completed && !r->error[0])
		snprintf(r->error, sizeof(r->error), "migration %s", r->st.mig.status);
	return r->completed ? 0 : -ECANCELED;
}

int tlm_inside_receive(const struct tlm_inside_opts *o, struct tlm_inside_result *r)
{
	static const char *const until[] = { "completed", NULL };
	uint64_t end;
	char uri[1024];
	int err, running = 0;

	memset(r, 0, sizeof(*r));
	err = tlm_inside_uri(o, false, uri, sizeof(uri), r->error, sizeof(r->error));
	if (err)
		return err;
	err = tlm_qmp_migrate_incoming(o->qmp, uri);
	if (err) {
		snprintf(r->error, sizeof(r->error), "QEMU refused migrate-incoming: %s",
			 tlm_qmp_last_error(o->qmp));
		return err;
	}
	err = follow(o, until, false, r);
	if (err)
		return err;
	/* "completed" is set as the VM starts; wait for it to run. */
	end = tlm__now_ms() + 10000;
	do {
		err = tlm_qmp_query_status(o->qmp, r->vm_status, sizeof(r->vm_status), &running);
		if (err || running)
			break;
		nanosleep(&(struct timespec){ .tv_nsec = 50 * 1000000 }, NULL);
	} while (tlm__left_ms(end));
	r->completed = running;
	if (!running)
		snprintf(r->error, sizeof(r->error), "the destination VM is %s, not running",
			 r->vm_status);
	return running ? 0 : -EIO;
}
