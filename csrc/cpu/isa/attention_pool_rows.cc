// One ISA variant of the CPU row kernels. CMakeLists.txt compiles this file once per instruction
// set with STQA_ISA_NS set to generic / avx2 / avx512 and the matching -m flags (the .cc suffix
// keeps it out of the csrc/cpu/*.cpp glob, which is compiled for the baseline ISA only).
#ifndef STQA_ISA_NS
#error "compile with -DSTQA_ISA_NS=generic|avx2|avx512"
#endif

#define STQA_STR2(x) #x
#define STQA_STR(x) STQA_STR2(x)

#include "cpu/attention_pool_rows.h"

namespace stqa::cpu::STQA_ISA_NS {

KernelTable kernel_table() {
  return KernelTable{
      STQA_STR(STQA_ISA_NS),
      &forward_rows<float>,
      &forward_rows<double>,
      &forward_rows<bf16>,
      &backward_rows<float>,
      &backward_rows<double>,
      &backward_rows<bf16>,
  };
}

}  // namespace stqa::cpu::STQA_ISA_NS
