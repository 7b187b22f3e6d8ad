/* SPDX-License-Identifier: MIT */
/*
 * When to enter stage 3. docs/policies.md states each rule; this is it.
 *
 * tlm and stop-copy never iterate (their decision is structural, in
 * engine-src.c and precopy.c). The iterating ones are asked after every
 * pass with the dirty set found, the bandwidth of the last pass and the
 * overlap between the last two dirty sets.
 */
#include <math.h>
#include <string.h>

#include "engine.h"

static const char *const names[] = {
	[TLM_POLICY_TLM] = "tlm",
	[TLM_POLICY_PRECOPY] = "precopy",
	[TLM_POLICY_STOPCOPY] = "stop-copy",
	[TLM_POLICY_FRS] = "frs",
	[TLM_POLICY_MP] = "mp",
};

int tlm_policy_parse(const char *name)
{
	for (unsigned i = 0; i < sizeof(names) / sizeof(names[0]); i++)
		if (name && !strcmp(name, names[i]))
			return (int)i;
	if (name && !strcmp(name, "stopcopy"))
		return TLM_POLICY_STOPCOPY;
	return -EINVAL;
}

const char *tlm_policy_name(enum tlm_policy p)
{
	return (unsigned)p < sizeof(names) / sizeof(names[0]) ? names[p] : "?";
}

double tlm__downtime_model(uint64_t pages, uint32_t page_size, double bw_Bps, double fixed_ms)
{
	if (pages == 0)
		return fixed_ms;
	if (bw_Bps <= 0)
		return HUGE_VAL;
	return (double)pages * page_size / bw_Bps * 1000.0 + fixed_ms;
}

/* Would stage 3 with what is dirty now fit the downtime target? */
static bool fits(const struct tlm_migrate_opts *o, const struct iter_info *it)
{
	if (it->dirty == 0)
		return true;
	return tlm__downtime_model(it->dirty, it->page_size, it->bw_Bps, it->fixed_ms) <=
	       (double)o->downtime_ms;
}

/* FRS: a page dirtied in consecutive passes belongs to the frequently
 * referenced set; re-sending it only buys another copy that will be stale
 * by the next pass. Stop once the FRS is most of the dirty set, or the
 * dirty set no longer shrinks by a tenth per pass. */
#define FRS_SHARE 0.8
#define FRS_SHRINK 0.9

/* MP: classify the write pattern from the first pass: a guest that dirties
 * pages at half the link's rate or more is write-intensive, and iterating
 * cannot win; go to stop-and-copy at once. Otherwise iterate as precopy. */
#define MP_HEAVY 0.5

int tlm__policy_decide(const struct tlm_migrate_opts *o, const struct iter_info *it)
{
	switch (o->policy) {
	case TLM_POLICY_PRECOPY:
		if (fits(o, it))
			return POL_STOP_CONVERGED;
		return it->iteration >= o->max_iterations ? POL_GIVE_UP : POL_CONTINUE;
	case TLM_POLICY_FRS:
		if (fits(o, it))
			return POL_STOP_CONVERGED;
		if (it->iteration >= 2 &&
		    ((double)it->overlap >= FRS_SHARE * (double)it->dirty ||
		     (double)it->dirty >= FRS_SHRINK * (double)it->prev_dirty))
			return POL_STOP_HEURISTIC;
		return it->iteration >= o->max_iterations ? POL_STOP_HEURISTIC : POL_CONTINUE;
	case TLM_POLICY_MP:
		if (fits(o, it))
			return POL_STOP_CONVERGED;
		if (it->iteration == 1 &&
		    it->dirty_rate_pps * it->page_size >= MP_HEAVY * it->bw_Bps)
			return POL_STOP_HEURISTIC;
		return it->iteration >= o->max_iterations ? POL_STOP_HEURISTIC : POL_CONTINUE;
	default:
		return POL_STOP_CONVERGED;
	}
}
