/* SPDX-License-Identifier: MIT */
/*
 * What the checkpoint file's code shares (core/ckpt.c: layout, header,
 * checker and reader; core/ckpt-write.c: the writer): the header's fields,
 * where everything lies, and the helpers both use.
 */
#ifndef TLM_CKPT_INTERNAL_H
#define TLM_CKPT_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "ckpt.h"
#include "engine.h"

#define MAGIC          "TLMCKPT"          /* 8 bytes with its NUL */
#define HDR_FIXED      256
#define REG_ENTRY      256
#define REG_NAME_LEN   208
#define OFF_VERSION    8
#define OFF_HDRLEN     12
#define OFF_PAGESIZE   16
#define OFF_NREGIONS   20
#define OFF_EPOCH      24
#define OFF_TIME       32
#define OFF_FILELEN    40
#define OFF_TABLE      48
#define OFF_TABLELEN   56
#define OFF_DEVOFF     64
#define OFF_DEVLEN     72
#define OFF_DEVSHA     80
#define OFF_CRC        112
#define RE_LEN         208
#define RE_OFF         216
#define RE_SHA         224
#define MAX_DEVSTATE   (1ull << 30)

_Static_assert(REG_NAME_LEN > TLM_REGION_NAME_MAX, "a region name fits its entry");
_Static_assert(RE_SHA + 32 == REG_ENTRY, "region entry layout");
_Static_assert(OFF_CRC + 4 <= HDR_FIXED, "fixed header layout");

/* Where everything lies for a layout. */
struct place {
	uint32_t hdr_len;
	uint64_t table_off, table_len;
	uint64_t off[TLM_MAX_REGIONS];
	uint64_t first_page[TLM_MAX_REGIONS];  /* global index of page 0 */
	uint64_t pages;                        /* all regions */
	uint64_t data_off, dev_off;            /* regions start, device state */
};

/* ckpt.c APIs: */
uint64_t tlm__ckpt_round_up(uint64_t v, uint64_t a);
int tlm__ckpt_place_of(const struct tlm_ckpt_layout *lay, struct place *p);
uint32_t tlm__ckpt_zero_crc(uint32_t ps);
int tlm__ckpt_sha256(const void *p, size_t n, uint8_t out[32]);
int tlm__ckpt_pread_all(int fd, void *buf, size_t n, uint64_t off);
int tlm__ckpt_pwrite_all(int fd, const void *buf, size_t n, uint64_t off);
/* Where the next data (not a hole) at or after *pos lies, up to end. */
int tlm__ckpt_next_data(int fd, uint64_t *pos, uint64_t end, uint64_t *stop);
void tlm__ckpt_encode_header(uint8_t *h, const struct tlm_ckpt_layout *lay,
			     const struct place *p, uint64_t epoch, uint64_t devlen,
			     const uint8_t devsha[32], const uint8_t (*regsha)[32]);
/* A whole file checked (pages: every page's crc too); the header, table
 * and device state handed out when asked for. */
int tlm__ckpt_check_fd(int fd, bool pages, struct tlm_ckpt_info *info, struct place *p,
		       uint8_t **hdr, uint32_t **table, uint8_t **dev, char *why, size_t wl);

#endif /* TLM_CKPT_INTERNAL_H */
