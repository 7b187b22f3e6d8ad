/*
 * Multiboot v1 entry of the test guest.  QEMU's -kernel loader takes an
 * ELF32 with this header in its first 8 KiB and enters _start in flat 32-bit
 * protected mode with EAX = 0x2BADB002 and EBX = the multiboot info.  The
 * GDTR it leaves is not ours to trust, so we load our own GDT (selector 0x08
 * code, 0x10 data) before the IDT refers to 0x08.
 *
 * QEMU places the multiboot info at 0x9000 and the command line after the end
 * of the loaded image (bss included), so zeroing .bss here clobbers neither;
 * guest_main() copies both before it touches memory past __kernel_end.
 */
#define MB_MAGIC 0x1BADB002
#define MB_FLAGS 0x00000003    /* page-align modules, give memory info */

	.section .multiboot, "a"
	.align 4
	.long MB_MAGIC, MB_FLAGS, -(MB_MAGIC + MB_FLAGS)

	.section .rodata
	.align 8
gdt:
	.quad 0
	.quad 0x00cf9a000000ffff    /* 0x08: code, base 0, 4 GiB, 32-bit */
	.quad 0x00cf92000000ffff    /* 0x10: data, base 0, 4 GiB */
gdt_end:
gdt_desc:
	.word gdt_end - gdt - 1
	.long gdt

	.section .bss
	.align 16
stack_bottom:
	.skip 32768
stack_top:

	.text
	.globl _start
_start:
	cli
	cld
	mov %eax, %esi              /* multiboot magic */
	mov %ebx, %ebp              /* multiboot info */
	lgdt gdt_desc
	ljmp $0x08, $1f
1:	mov $0x10, %ax
	mov %ax, %ds
	mov %ax, %es
	mov %ax, %fs
	mov %ax, %gs
	mov %ax, %ss
	mov $__bss_start, %edi
	mov $__bss_end, %ecx
	sub %edi, %ecx
	xor %eax, %eax
	rep stosb
	mov $stack_top, %esp
	push %ebp
	push %esi
	call guest_main
2:	cli
	hlt
	jmp 2b

/* Interrupt stubs: push a dummy error code where the CPU pushes none. */
.macro ISR_NOERR n
isr\n:
	push $0
	push $\n
	jmp isr_common
.endm
.macro ISR_ERR n
isr\n:
	push $\n
	jmp isr_common
.endm

ISR_NOERR 0
ISR_NOERR 1
ISR_NOERR 2
ISR_NOERR 3
ISR_NOERR 4
ISR_NOERR 5
ISR_NOERR 6
ISR_NOERR 7
ISR_ERR 8
ISR_NOERR 9
ISR_ERR 10
ISR_ERR 11
ISR_ERR 12
ISR_ERR 13
ISR_ERR 14
ISR_NOERR 15
ISR_NOERR 16
ISR_ERR 17
ISR_NOERR 18
ISR_NOERR 19
ISR_NOERR 20
ISR_ERR 21
ISR_NOERR 22
ISR_NOERR 23
ISR_NOERR 24
ISR_NOERR 25
ISR_NOERR 26
ISR_NOERR 27
ISR_NOERR 28
ISR_ERR 29
ISR_ERR 30
ISR_NOERR 31
ISR_NOERR 32
ISR_NOERR 33
ISR_NOERR 34
ISR_NOERR 35
ISR_NOERR 36
ISR_NOERR 37
ISR_NOERR 38
ISR_NOERR 39
ISR_NOERR 40
ISR_NOERR 41
ISR_NOERR 42
ISR_NOERR 43
ISR_NOERR 44
ISR_NOERR 45
ISR_NOERR 46
ISR_NOERR 47

isr_common:
	pusha
	cld
	push %esp                   /* struct isr_frame * */
	call isr_dispatch
	add $4, %esp
	popa
	add $8, %esp                /* vector, error code */
	iret

	.section .rodata
	.align 4
	.globl isr_stubs
isr_stubs:
	.long isr0, isr1, isr2, isr3, isr4, isr5, isr6, isr7
	.long isr8, isr9, isr10, isr11, isr12, isr13, isr14, isr15
	.long isr16, isr17, isr18, isr19, isr20, isr21, isr22, isr23
	.long isr24, isr25, isr26, isr27, isr28, isr29, isr30, isr31
	.long isr32, isr33, isr34, isr35, isr36, isr37, isr38, isr39
	.long isr40, isr41, isr42, isr43, isr44, isr45, isr46, isr47

	.section .note.GNU-stack, "", @progbits
