// Which ISA variant of the CPU row kernels this process uses ("avx512", "avx2" or "generic").
#pragma once

#include <string>

namespace stqa::cpu {
std::string capability();
}
