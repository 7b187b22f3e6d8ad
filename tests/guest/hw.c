/*
 * Hardware layer of the test guest (see hw.h).
 *
 * Time: the TSC is calibrated once against PIT channel 2 (gate via port
 * 0x61).  Under QEMU/TCG without icount the guest TSC follows the host's
 * TSC and the PIT follows QEMU_CLOCK_VIRTUAL, so both advance with real time
 * while the VM runs and the calibration holds.  Across a migration QEMU
 * carries the TSC offset, so guest time stays monotonic; callers still clamp
 * big forward jumps (the VM was paused) rather than trusting them.
 *
 * PIT channel 0 ticks at 1 kHz purely to wake the CPU from `hlt` when the
 * guest waits for its rate budget, so an idle or rate-limited guest does not
 * burn a host core.
 */
#include "hw.h"

#define COM1 0x3f8
#define PIT_HZ 1193182u
#define TICK_HZ 1000u

uint32_t tsc_per_ms;
volatile uint32_t hw_ticks;

struct idt_gate {
	uint16_t off_lo;
	uint16_t sel;
	uint8_t zero;
	uint8_t type;
	uint16_t off_hi;
} __attribute__((packed));

struct idt_ptr {
	uint16_t limit;
	uint32_t base;
} __attribute__((packed));

/* Frame built by isr_common in multiboot.S: pusha, then vector, error, iret. */
struct isr_frame {
	uint32_t edi, esi, ebp, esp, ebx, edx, ecx, eax;
	uint32_t vec, err;
	uint32_t eip, cs, eflags;
};

extern const uint32_t isr_stubs[48];   /* multiboot.S: vectors 0..47 */
void isr_dispatch(struct isr_frame *f);

static struct idt_gate idt[48];

void *memset(void *d, int c, size_t n)
{
	unsigned char *p = d;

	while (n--)
		*p++ = (unsigned char)c;
	return d;
}

void *memcpy(void *d, const void *s, size_t n)
{
	unsigned char *p = d;
	const unsigned char *q = s;

	while (n--)
		*p++ = *q++;
	return d;
}

/* n / d for a u64 n without libgcc: two 32-bit divl steps. */
uint64_t div64_32(uint64_t n, uint32_t d, uint32_t *rem)
{
	uint32_t hi = (uint32_t)(n >> 32), lo = (uint32_t)n;
	uint32_t qhi = hi / d, r = hi % d, qlo;

	__asm__("divl %4" : "=a"(qlo), "=d"(r) : "a"(lo), "d"(r), "rm"(d));
	if (rem)
		*rem = r;
	return ((uint64_t)qhi << 32) | qlo;
}

static void serial_init(void)
{
	outb(COM1 + 1, 0x00);  /* no UART interrupts: we poll */
	outb(COM1 + 3, 0x80);  /* DLAB */
	outb(COM1 + 0, 0x01);  /* 115200 */
	outb(COM1 + 1, 0x00);
	outb(COM1 + 3, 0x03);  /* 8N1 */
	outb(COM1 + 2, 0xc7);  /* FIFO on, cleared */
	outb(COM1 + 4, 0x03);  /* DTR, RTS */
}

static void serial_putc(char c)
{
	/* Bounded wait: a chardev that never drains must not hang the guest. */
	for (int i = 0; i < 100000 && !(inb(COM1 + 5) & 0x20); i++)
		cpu_relax();
	outb(COM1, (uint8_t)c);
}

static char line[256];
static size_t line_len;

void ln_str(const char *s)
{
	while (*s && line_len < sizeof(line) - 2)
		line[line_len++] = *s++;
}

void ln_u64(uint64_t v)
{
	char buf[21];
	int i = 20;
	uint32_t r;

	buf[i] = 0;
	do {
		v = div64_32(v, 10, &r);
		buf[--i] = (char)('0' + r);
	} while (v);
	ln_str(&buf[i]);
}

void ln_hex(uint32_t v)
{
	static const char digits[] = "0123456789abcdef";
	char buf[11];

	buf[0] = '0';
	buf[1] = 'x';
	for (int i = 0; i < 8; i++)
		buf[2 + i] = digits[(v >> (28 - 4 * i)) & 0xf];
	buf[10] = 0;
	ln_str(buf);
}

void ln_end(void)
{
	line[line_len++] = '\n';
	for (size_t i = 0; i < line_len; i++)
		serial_putc(line[i]);
	line_len = 0;
}

void hw_halt(void)
{
	for (;;)
		__asm__ volatile("cli; hlt");
}

void isr_dispatch(struct isr_frame *f)
{
	if (f->vec >= 32) {
		if (f->vec == 32)
			hw_ticks++;
		if (f->vec >= 40)
			outb(0xa0, 0x20);
		outb(0x20, 0x20);
		return;
	}
	/* A CPU exception is a guest bug: say so on the serial line and stop. */
	line_len = 0;
	ln_str("TLMG fault vec=");
	ln_u64(f->vec);
	ln_str(" err=");
	ln_hex(f->err);
	ln_str(" eip=");
	ln_hex(f->eip);
	ln_end();
	hw_halt();
}

static void idt_init(void)
{
	struct idt_ptr p;

	for (int i = 0; i < 48; i++) {
		idt[i].off_lo = (uint16_t)isr_stubs[i];
		idt[i].off_hi = (uint16_t)(isr_stubs[i] >> 16);
		idt[i].sel = 0x08;
		idt[i].zero = 0;
		idt[i].type = 0x8e;    /* present, ring 0, 32-bit interrupt gate */
	}
	p.limit = sizeof(idt) - 1;
	p.base = (uint32_t)(uintptr_t)idt;
	__asm__ volatile("lidt %0" : : "m"(p));
}

/* Remap the PICs to vectors 32..47 and unmask only IRQ0 (the PIT). */
static void pic_init(void)
{
	outb(0x20, 0x11);
	outb(0xa0, 0x11);
	outb(0x21, 0x20);
	outb(0xa1, 0x28);
	outb(0x21, 0x04);
	outb(0xa1, 0x02);
	outb(0x21, 0x01);
	outb(0xa1, 0x01);
	outb(0x21, 0xfe);
	outb(0xa1, 0xff);
}

/* TSC ticks during `count` PIT cycles, timed with channel 2 in mode 0. */
static uint64_t tsc_over_pit(uint16_t count)
{
	uint64_t t0, t1;
	uint32_t spins = 0;

	outb(0x61, (uint8_t)((inb(0x61) & ~0x02) | 0x01)); /* gate on, speaker off */
	outb(0x43, 0xb0);                                  /* ch2, lo/hi, mode 0 */
	outb(0x42, (uint8_t)count);
	outb(0x42, (uint8_t)(count >> 8));
	t0 = rdtsc();
	while (!(inb(0x61) & 0x20) && ++spins < 50000000u)
		;
	t1 = rdtsc();
	return t1 - t0;
}

static void tsc_calibrate(void)
{
	const uint16_t count = 59659;   /* 50 ms */
	uint64_t best = ~0ull;

	/* Take the shortest of three: a host preemption only ever lengthens. */
	for (int i = 0; i < 3; i++) {
		uint64_t d = tsc_over_pit(count);

		if (d < best)
			best = d;
	}
	/* ticks per ms = best * PIT_HZ / (count * 1000); no overflow below ~15 THz */
	tsc_per_ms = (uint32_t)div64_32(best * PIT_HZ, (uint32_t)count * 1000u, NULL);
	if (tsc_per_ms < 1000)
		tsc_per_ms = 1000000;   /* nonsense reading: assume 1 GHz */
}

static void tick_init(void)
{
	uint32_t div = PIT_HZ / TICK_HZ;

	outb(0x43, 0x34);       /* ch0, lo/hi, mode 2 (rate generator) */
	outb(0x40, (uint8_t)div);
	outb(0x40, (uint8_t)(div >> 8));
}

void hw_init(void)
{
	serial_init();
	idt_init();
	pic_init();
	tsc_calibrate();
	tick_init();
	__asm__ volatile("sti");
}
