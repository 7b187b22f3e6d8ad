/* SPDX-License-Identifier: MIT */
#include <string.h>

#include "tlm-internal.h"

static const char *const tlm_errs[] = {
	[TLM_EAUTH - TLM_EBASE] = "peer failed authentication (wrong or missing pre-shared key)",
	[TLM_EVERSION - TLM_EBASE] = "peer speaks another wire version",
	[TLM_ECRC - TLM_EBASE] = "page record failed its crc32c check",
	[TLM_EFRAME - TLM_EBASE] = "malformed or truncated frame",
	[TLM_ESESSION - TLM_EBASE] = "lane joined with an unknown session or lane index",
	[TLM_EPARAM - TLM_EBASE] = "session parameters refused (the log says by which side and why)",
	[TLM_EPEERCLOSED - TLM_EBASE] = "peer closed the lane mid-stream",
	[TLM_ENOTRANSPORT - TLM_EBASE] = "transport not built into this libtlm",
	[TLM_EPSK - TLM_EBASE] = "unusable pre-shared key",
	[TLM_EABORTED - TLM_EBASE] = "migration aborted",
	[TLM_ENOTCONV - TLM_EBASE] = "policy did not converge within its cap",
	[TLM_ESEAL - TLM_EBASE] = "a sealed frame failed authentication (modified, replayed, "
				  "dropped or reordered in transit)",
};

const char *tlm_strerror(int err)
{
	if (err < 0)
		err = -err;
	if (err == 0)
		return "success";
	if (err > TLM_EBASE && err < TLM_ELAST && tlm_errs[err - TLM_EBASE])
		return tlm_errs[err - TLM_EBASE];
	if (err < TLM_EBASE)
		return strerror(err);
	return "unknown error";
}
