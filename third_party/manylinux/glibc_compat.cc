// Keeps a shared library built on a new glibc (Debian 12: glibc 2.36, gcc 12) loadable on glibc
// 2.27, i.e. honest to its manylinux_2_27 wheel tag. Link it into the library (a dep of the
// cc_binary); nothing needs to include anything. scripts/check_manylinux.py verifies the result.
//
// 1. Functions whose default symbol version is newer than GLIBC_2.27 but which glibc still exports
//    under their old version (libpthread/libdl merged into libc in 2.34; new exp/log/pow in 2.29;
//    hypot 2.35): for each one a hidden definition `name` that tail-jumps to `name@OLD`. Every
//    reference in the library binds to the hidden local definition at link time, so the library
//    only imports the old version. A jump keeps arguments and return value whatever the
//    signature. Each stub sits in its own section: with --gc-sections (Bazel's -c opt) unused ones
//    are dropped and import nothing.
// 2. __libc_single_threaded (GLIBC_2.32, no older version), which gcc >= 11's libstdc++ headers
//    read to skip atomic reference counting: a hidden copy that always says "multi-threaded" (0),
//    which is always correct (atomics are used, as on glibc < 2.32).
// 3. std::__throw_bad_array_new_length() (GLIBCXX_3.4.29; gcc >= 11 headers call it from
//    std::allocator<T>::allocate): a hidden copy that throws the same exception.
// 4. The default constructor of std::stringstream (GLIBCXX_3.4.26; XLA's FFI headers build their
//    diagnostics with one): a hidden copy that runs the (openmode) constructor every
//    libstdc++ with the C++11 ABI exports (GLIBCXX_3.4.21), with the same default mode.
//
// On glibc < 2.34 the pthread/dl functions live in libpthread.so.0/libdl.so.2; the BUILD rule
// adds both as NEEDED (they are empty stubs on glibc >= 2.34). Old symbol versions are matched by
// version name, in whichever loaded library defines them.
#include <new>
#include <sstream>

// clang-format off: one assembler line per line
#define TFDCN_OLD_VERSION(name, version)                                  \
  __asm__(".symver __tfdcn_old_" #name ", " #name "@" version "\n"      \
          ".pushsection .text.tfdcn_compat_" #name ",\"ax\",@progbits\n"  \
          ".globl " #name "\n"                                            \
          ".hidden " #name "\n"                                           \
          ".type " #name ", @function\n"                                  \
          ".p2align 4\n" #name ":\n"                                      \
          "  endbr64\n"                                                   \
          "  jmp __tfdcn_old_" #name "@PLT\n"                             \
          ".size " #name ", .-" #name "\n"                                \
          ".popsection\n")
// clang-format on

// libdl (GLIBC_2.34 in libc since 2.34).
TFDCN_OLD_VERSION(dladdr, "GLIBC_2.2.5");
TFDCN_OLD_VERSION(dladdr1, "GLIBC_2.3.3");
TFDCN_OLD_VERSION(dlclose, "GLIBC_2.2.5");
TFDCN_OLD_VERSION(dlerror, "GLIBC_2.2.5");
TFDCN_OLD_VERSION(dlinfo, "GLIBC_2.3.3");
TFDCN_OLD_VERSION(dlmopen, "GLIBC_2.3.4");
TFDCN_OLD_VERSION(dlopen, "GLIBC_2.2.5");
TFDCN_OLD_VERSION(dlsym, "GLIBC_2.2.5");
TFDCN_OLD_VERSION(dlvsym, "GLIBC_2.2.5");

// libpthread (GLIBC_2.34 or 2.32 in libc since 2.34).
TFDCN_OLD_VERSION(pthread_attr_getaffinity_np, "GLIBC_2.3.4");
TFDCN_OLD_VERSION(pthread_attr_getguardsize, "GLIBC_2.2.5");
TFDCN_OLD_VERSION(pthread_attr_getstack, "GLIBC_2.2.5");
TFDCN_OLD_VERSION(pthread_attr_getstacksize, "GLIBC_2.2.5");
TFDCN_OLD_VERSION(pthread_attr_setaffinity_np, "GLIBC_2.3.4");
TFDCN_OLD_VERSION(pthread_attr_setguardsize, "GLIBC_2.2.5");
TFDCN_OLD_VERSION(pthread_attr_setstack, "GLIBC_2.2.5");
TFDCN_OLD_VERSION(pthread_attr_setstacksize, "GLIBC_2.2.5");
TFDCN_OLD_VERSION(pthread_barrier_destroy, "GLIBC_2.2.5");
TFDCN_OLD_VERSION(pthread_barrier_init, "GLIBC_2.2.5");
TFDCN_OLD_VERSION(pthread_barrier_wait, "GLIBC_2.2.5");
TFDCN_OLD_VERSION(pthread_cancel, "GLIBC_2.2.5");
TFDCN_OLD_VERSION(pthread_condattr_setclock, "GLIBC_2.3.3");
TFDCN_OLD_VERSION(pthread_create, "GLIBC_2.2.5");
TFDCN_OLD_VERSION(pthread_detach, "GLIBC_2.2.5");
TFDCN_OLD_VERSION(pthread_getaffinity_np, "GLIBC_2.3.4");
TFDCN_OLD_VERSION(pthread_getattr_np, "GLIBC_2.2.5");
TFDCN_OLD_VERSION(pthread_getname_np, "GLIBC_2.12");
TFDCN_OLD_VERSION(pthread_getspecific, "GLIBC_2.2.5");
TFDCN_OLD_VERSION(pthread_join, "GLIBC_2.2.5");
TFDCN_OLD_VERSION(pthread_key_create, "GLIBC_2.2.5");
TFDCN_OLD_VERSION(pthread_key_delete, "GLIBC_2.2.5");
TFDCN_OLD_VERSION(pthread_kill, "GLIBC_2.2.5");
TFDCN_OLD_VERSION(pthread_mutex_timedlock, "GLIBC_2.2.5");
TFDCN_OLD_VERSION(pthread_mutex_trylock, "GLIBC_2.2.5");
TFDCN_OLD_VERSION(pthread_mutexattr_destroy, "GLIBC_2.2.5");
TFDCN_OLD_VERSION(pthread_mutexattr_init, "GLIBC_2.2.5");
TFDCN_OLD_VERSION(pthread_mutexattr_setpshared, "GLIBC_2.2.5");
TFDCN_OLD_VERSION(pthread_mutexattr_settype, "GLIBC_2.2.5");
TFDCN_OLD_VERSION(pthread_once, "GLIBC_2.2.5");
TFDCN_OLD_VERSION(pthread_rwlock_destroy, "GLIBC_2.2.5");
TFDCN_OLD_VERSION(pthread_rwlock_init, "GLIBC_2.2.5");
TFDCN_OLD_VERSION(pthread_rwlock_rdlock, "GLIBC_2.2.5");
TFDCN_OLD_VERSION(pthread_rwlock_timedrdlock, "GLIBC_2.2.5");
TFDCN_OLD_VERSION(pthread_rwlock_timedwrlock, "GLIBC_2.2.5");
TFDCN_OLD_VERSION(pthread_rwlock_tryrdlock, "GLIBC_2.2.5");
TFDCN_OLD_VERSION(pthread_rwlock_trywrlock, "GLIBC_2.2.5");
TFDCN_OLD_VERSION(pthread_rwlock_unlock, "GLIBC_2.2.5");
TFDCN_OLD_VERSION(pthread_rwlock_wrlock, "GLIBC_2.2.5");
TFDCN_OLD_VERSION(pthread_setaffinity_np, "GLIBC_2.3.4");
TFDCN_OLD_VERSION(pthread_setname_np, "GLIBC_2.12");
TFDCN_OLD_VERSION(pthread_sigmask, "GLIBC_2.2.5");
TFDCN_OLD_VERSION(pthread_spin_destroy, "GLIBC_2.2.5");
TFDCN_OLD_VERSION(pthread_spin_init, "GLIBC_2.2.5");
TFDCN_OLD_VERSION(pthread_spin_lock, "GLIBC_2.2.5");
TFDCN_OLD_VERSION(pthread_spin_trylock, "GLIBC_2.2.5");
TFDCN_OLD_VERSION(pthread_spin_unlock, "GLIBC_2.2.5");
TFDCN_OLD_VERSION(pthread_testcancel, "GLIBC_2.2.5");
TFDCN_OLD_VERSION(pthread_timedjoin_np, "GLIBC_2.3.3");
TFDCN_OLD_VERSION(pthread_tryjoin_np, "GLIBC_2.3.3");
TFDCN_OLD_VERSION(sem_destroy, "GLIBC_2.2.5");
TFDCN_OLD_VERSION(sem_getvalue, "GLIBC_2.2.5");
TFDCN_OLD_VERSION(sem_init, "GLIBC_2.2.5");
TFDCN_OLD_VERSION(sem_post, "GLIBC_2.2.5");
TFDCN_OLD_VERSION(sem_timedwait, "GLIBC_2.2.5");
TFDCN_OLD_VERSION(sem_trywait, "GLIBC_2.2.5");
TFDCN_OLD_VERSION(sem_wait, "GLIBC_2.2.5");

// libm: new versions without SVID error handling in 2.29 (exp, exp2, log, log2, pow), 2.35 (hypot).
TFDCN_OLD_VERSION(exp, "GLIBC_2.2.5");
TFDCN_OLD_VERSION(exp2, "GLIBC_2.2.5");
TFDCN_OLD_VERSION(log, "GLIBC_2.2.5");
TFDCN_OLD_VERSION(log2, "GLIBC_2.2.5");
TFDCN_OLD_VERSION(pow, "GLIBC_2.2.5");
TFDCN_OLD_VERSION(hypot, "GLIBC_2.2.5");
TFDCN_OLD_VERSION(hypotf, "GLIBC_2.2.5");

// glibc 2.32: no older version exists, so a private copy.
extern "C" {
__attribute__((visibility("hidden"), used)) char __libc_single_threaded = 0;
}

// GLIBCXX_3.4.29: a private std::__throw_bad_array_new_length(), defined under another name and
// aliased (the std:: declaration in <bits/functexcept.h> has default visibility).
extern "C" [[noreturn]] __attribute__((visibility("hidden"), used)) void
__tfdcn_throw_bad_array_new_length() {
  throw std::bad_array_new_length();
}
__asm__(
    ".globl _ZSt28__throw_bad_array_new_lengthv\n"
    ".hidden _ZSt28__throw_bad_array_new_lengthv\n"
    ".set _ZSt28__throw_bad_array_new_lengthv, __tfdcn_throw_bad_array_new_length\n");

// GLIBCXX_3.4.26: std::__cxx11::basic_stringstream<char>::basic_stringstream(), likewise.
extern "C" __attribute__((visibility("hidden"), used)) void __tfdcn_stringstream_construct(
    std::stringstream* self) {
  new (self) std::stringstream(std::ios_base::in | std::ios_base::out);
}
__asm__(
    ".globl _ZNSt7__cxx1118basic_stringstreamIcSt11char_traitsIcESaIcEEC1Ev\n"
    ".hidden _ZNSt7__cxx1118basic_stringstreamIcSt11char_traitsIcESaIcEEC1Ev\n"
    ".set _ZNSt7__cxx1118basic_stringstreamIcSt11char_traitsIcESaIcEEC1Ev, "
    "__tfdcn_stringstream_construct\n");
