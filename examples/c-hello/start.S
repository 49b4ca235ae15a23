/*
 * Entry of the c-hello images (x86_64, long mode, identity mapped; guest-images/link.ld puts
 * section .text._start first, at 1 MiB). The loader enters here with RDI = guest-physical
 * address of the boot info and RSP = a loader stack, in ring 0 or, for a paravirtual guest,
 * in ring 3; nothing here is privileged.
 *
 * Zeroes .bss (on the loader stack), switches to the image's own stack and calls
 * c_main(boot_info_gpa), which does not return; if it does, the vCPU spins.
 */
    .section .text._start, "ax", @progbits
    .globl _start
    .type _start, @function
_start:
    mov     %rdi, %r12
    lea     __bss_start(%rip), %rdi
    lea     __bss_end(%rip), %rcx
    sub     %rdi, %rcx
    xor     %eax, %eax
    cld
    rep stosb
    lea     c_hello_stack_top(%rip), %rsp
    xor     %ebp, %ebp
    mov     %r12, %rdi
    call    c_main
1:  pause
    jmp     1b
    .size _start, . - _start

    .section .bss.c_hello_stack, "aw", @nobits
    .balign 16
c_hello_stack:
    .skip   65536
c_hello_stack_top:

    .section .note.GNU-stack, "", @progbits
