// Test probe for :glibc_compat: uses symbols whose default versions on glibc 2.36 / gcc 12 are
// newer than manylinux_2_27 allows. Built twice, without and with :glibc_compat.
#include <dlfcn.h>

#include <cmath>
#include <memory>
#include <mutex>
#include <new>
#include <thread>
#include <vector>
static std::once_flag flag;
static int once_count = 0;
extern "C" double tfdcn_probe(double x) {
  std::call_once(flag, [] { once_count++; });  // pthread_once@GLIBC_2.34
  auto p = std::make_shared<std::vector<double>>(4, 0.0);
  auto q = p;          // __libc_single_threaded@GLIBC_2.32
  std::thread t([&] {  // pthread_create (libstdc++)
    (*q)[0] = std::exp(x) + std::log(x) + std::pow(x, 1.5) + std::exp2(x) + std::log2(x);
  });
  t.join();
  void* h = dlopen("libm.so.6", RTLD_NOW);  // dl*@GLIBC_2.34
  if (h != nullptr) {
    auto cosine = reinterpret_cast<double (*)(double)>(dlsym(h, "cos"));
    (*q)[1] = cosine(x);
    dlclose(h);
  } else {
    dlerror();
  }
  (*q)[2] = std::hypot(x, 1.0);
  try {
    if (x < 0) std::__throw_bad_array_new_length();  // GLIBCXX_3.4.29
  } catch (const std::bad_array_new_length&) {
    return -1.0;
  }
  return (*q)[0] + (*q)[1] + (*q)[2] + once_count;
}
