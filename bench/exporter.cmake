# Figure 7 of DESIGN §8: one exporter scrape of 1,000 processes × 8 pools, and the stats segment's
# size (the shim's memory per process besides reserves).
add_executable(bench_exporter_scrape ${CMAKE_CURRENT_LIST_DIR}/exporter_bench.cc)
target_link_libraries(bench_exporter_scrape PRIVATE dmashim_segment dmashim_exporter_http
  benchmark::benchmark)
