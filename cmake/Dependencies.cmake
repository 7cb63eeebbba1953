# Every third-party dependency comes from a Debian package; when one is missing, stop with the
# package's name so `apt-get install` is one copy away. scripts/install-deps.sh installs them all.

macro(dmashim_require_package name debian_package)
  find_package(${name} ${ARGN} QUIET)
  if(NOT ${name}_FOUND)
    message(FATAL_ERROR
      "dmashim: ${name} not found. Install the Debian package '${debian_package}' "
      "(apt-get install ${debian_package}), or run scripts/install-deps.sh as root.")
  endif()
endmacro()

find_package(Threads REQUIRED)
dmashim_require_package(absl libabsl-dev CONFIG)
dmashim_require_package(Libunwind libunwind-dev)
dmashim_require_package(tomlplusplus libtomlplusplus-dev CONFIG)
dmashim_require_package(prometheus-cpp prometheus-cpp-dev CONFIG)
# The exporter answers GET /metrics in a civetweb callback on prometheus-cpp's Exposer.
dmashim_require_package(civetweb libcivetweb-dev CONFIG)
if(DMASHIM_BUILD_TESTS)
  dmashim_require_package(GTest "googletest libgtest-dev")
endif()
if(DMASHIM_BUILD_BENCH)
  dmashim_require_package(benchmark libbenchmark-dev CONFIG)
endif()
