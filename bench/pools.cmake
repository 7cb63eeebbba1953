# Figures 1–6 and 8 of DESIGN §8 (figure 7, the exporter scrape, is exporter.cmake's).
add_executable(bench_pools ${CMAKE_CURRENT_LIST_DIR}/pools_bench.cc)
target_link_libraries(bench_pools PRIVATE dmashim_pools benchmark::benchmark Threads::Threads)

add_executable(bench_shim ${CMAKE_CURRENT_LIST_DIR}/shim_bench.cc)
target_link_libraries(bench_shim PRIVATE benchmark::benchmark ${CMAKE_DL_LIBS} Threads::Threads)
target_include_directories(bench_shim PRIVATE ${PROJECT_SOURCE_DIR})  # bench/bench_util.h

# DPDK (Debian libdpdk-dev) is only needed for figure 4's peer; without it that row says so.
find_package(PkgConfig QUIET)
if(PkgConfig_FOUND)
  pkg_check_modules(DPDK QUIET IMPORTED_TARGET libdpdk)
endif()
if(DPDK_FOUND)
  add_executable(bench_dpdk ${CMAKE_CURRENT_LIST_DIR}/dpdk_bench.cc)
  target_link_libraries(bench_dpdk PRIVATE PkgConfig::DPDK benchmark::benchmark)
  # DPDK's headers are C with GNU extensions and warn under -Wextra.
  target_compile_options(bench_dpdk PRIVATE -Wno-error -w)
else()
  message(STATUS "dmashim: libdpdk-dev not found; bench_dpdk (figure 4's peer) is not built")
endif()
