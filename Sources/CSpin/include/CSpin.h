#ifndef CNNC_CSPIN_H
#define CNNC_CSPIN_H

#include <stdlib.h>  // defines __GLIBC__ where the C library is glibc
#if defined(__GLIBC__)
#include <malloc.h>
#endif

/// One wait of a spin loop: x86's pause (and AArch64's yield) tell the core the thread is spinning, so it
/// gives the execution units to the other hardware thread of the core and draws less power. A pool's
/// waiting worker otherwise slows the thread it waits for when the two share a core (measured on a 2-vCPU
/// Zen 5 guest: the serial conv1 of a batch-1 inference 12 us alone, 20 us beside a plain spinning loop).
static inline void cnnc_spin_pause(void) {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#elif defined(__aarch64__)
  __asm__ __volatile__("yield");
#endif
}

/// Returns to the system the memory that freed blocks hold in the allocator's heap. LLVM's code generation frees
/// tens of MB in small blocks that glibc keeps for reuse, and the large buffers allocated next are mapped apart,
/// so without this that memory stays resident under them (ResNet-18 at batch 1: 25 MB of 266). Elsewhere, nothing.
static inline void cnnc_return_freed_memory(void) {
#if defined(__GLIBC__)
  malloc_trim(0);
#endif
}

#endif
