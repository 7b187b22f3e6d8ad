/*
 * The test guest's hardware layer: port I/O, COM1, the line printer, time
 * (TSC calibrated against PIT channel 2), the PIT/PIC tick that wakes `hlt`,
 * and the IDT.  Everything here is single-CPU and runs with interrupts on
 * once hw_init() returns; the only state shared with the interrupt handler is
 * hw_ticks.
 *
 * Built freestanding for i386 (see meson.build): no libc, no libgcc, so no
 * 64-bit division either; div64_32() is the one place that divides a u64.
 */
#ifndef TLM_GUEST_HW_H
#define TLM_GUEST_HW_H

#include <stddef.h>
#include <stdint.h>

static inline void outb(uint16_t port, uint8_t v)
{
	__asm__ volatile("outb %0, %1" : : "a"(v), "Nd"(port));
}

static inline uint8_t inb(uint16_t port)
{
	uint8_t v;

	__asm__ volatile("inb %1, %0" : "=a"(v) : "Nd"(port));
	return v;
}

static inline uint64_t rdtsc(void)
{
	uint32_t lo, hi;

	__asm__ volatile("rdtsc" : "=a"(lo), "=d"(hi));
	return ((uint64_t)hi << 32) | lo;
}

static inline void cpu_relax(void)
{
	__asm__ volatile("pause" ::: "memory");
}

/* Sleep until the next interrupt (the 1 kHz PIT tick at the latest). */
static inline void cpu_idle(void)
{
	__asm__ volatile("sti; hlt" ::: "memory");
}

static inline void barrier(void)
{
	__asm__ volatile("" ::: "memory");
}

/* hw.c: */
void hw_init(void);                 /* serial, IDT, PIC, TSC calibration, tick */
extern uint32_t tsc_per_ms;         /* set by hw_init(), never 0 */
extern volatile uint32_t hw_ticks;  /* PIT interrupts so far (1 kHz) */
uint64_t div64_32(uint64_t n, uint32_t d, uint32_t *rem);
void hw_halt(void) __attribute__((noreturn));

/*
 * Line printer: a line is assembled in a buffer and written to COM1 in one go
 * by ln_end(), so a line is never interleaved with another.
 */
void ln_str(const char *s);
void ln_u64(uint64_t v);
void ln_hex(uint32_t v);            /* 0x-prefixed */
void ln_end(void);                  /* appends \n and writes the line */

void *memset(void *d, int c, size_t n);
void *memcpy(void *d, const void *s, size_t n);

#endif
