// Deliberate bugs for the sanitizer builds to catch, proving that their CI jobs can fail:
// `sanitizer_canary heap` reads one element past a heap array (ASan), `int` overflows a signed
// integer (UBSan), `race` writes one variable from two threads without synchronisation (TSan).
// The CTest tests around it pass only when the run fails with the sanitizer's report; built
// without sanitizers it exits 0 and the tests fail.
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <thread>

namespace {
int shared_counter = 0;  // the race: both threads increment it with no lock
}

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: sanitizer_canary heap|int|race\n");
    return 2;
  }
  // The sizes come from the command line so the compiler cannot prove the bug and drop it.
  const int n = static_cast<int>(std::strlen(argv[1]));
  if (std::strcmp(argv[1], "heap") == 0) {
    int* p = new int[static_cast<unsigned>(n)]();
    volatile int out_of_bounds = p[n];  // one past the end
    std::printf("read %d past the end\n", out_of_bounds);
    delete[] p;
  } else if (std::strcmp(argv[1], "int") == 0) {
    volatile int big = 2147483647 - 3 + n;  // INT_MAX
    const int sum = big + 1;                // signed overflow: undefined behaviour
    std::printf("INT_MAX + 1 = %d\n", sum);
  } else if (std::strcmp(argv[1], "race") == 0) {
    auto bump = [n] {
      for (int i = 0; i < 1000 * n; ++i) shared_counter = shared_counter + 1;
    };
    std::thread a(bump), b(bump);
    a.join();
    b.join();
    std::printf("counter %d\n", shared_counter);
  }
  return 0;
}
