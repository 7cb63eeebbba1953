# dmashim-exporter (DESIGN §7). The segment reader and the collector form a library so tests can
# drive a scrape in-process; the binary adds the HTTP Exposer and the flags.
add_library(dmashim_exporter_lib STATIC
  ${CMAKE_CURRENT_LIST_DIR}/collector.cc
  ${CMAKE_CURRENT_LIST_DIR}/metric_sink.cc
  ${CMAKE_CURRENT_LIST_DIR}/segment_reader.cc
)
target_include_directories(dmashim_exporter_lib PUBLIC ${PROJECT_SOURCE_DIR})
# The layout header needs only pools/stats.h (header + InitPoolStats); no writer code is linked.
target_link_libraries(dmashim_exporter_lib PUBLIC
  dmashim_pools prometheus-cpp::core absl::status absl::statusor absl::strings
  absl::synchronization absl::function_ref absl::flat_hash_map absl::cleanup)

# GET /metrics on prometheus-cpp's Exposer, answered with the collector's text (civetweb callback).
add_library(dmashim_exporter_http STATIC ${CMAKE_CURRENT_LIST_DIR}/metrics_endpoint.cc)
target_link_libraries(dmashim_exporter_http PUBLIC
  dmashim_exporter_lib prometheus-cpp::core prometheus-cpp::pull civetweb::civetweb civetweb::civetweb-cpp)

add_executable(dmashim-exporter ${CMAKE_CURRENT_LIST_DIR}/exporter_main.cc)
target_link_libraries(dmashim-exporter PRIVATE dmashim_exporter_http)
install(TARGETS dmashim-exporter RUNTIME DESTINATION bin)
