# The stats-segment writer (DESIGN §7). Linked into libdmashim.so; the exporter only uses the
# header (shim/stats_segment.h), which defines the file layout for both sides.
add_library(dmashim_segment STATIC ${CMAKE_CURRENT_LIST_DIR}/stats_segment.cc)
target_include_directories(dmashim_segment PUBLIC ${PROJECT_SOURCE_DIR})
target_compile_options(dmashim_segment PRIVATE -fvisibility=hidden)
target_link_libraries(dmashim_segment PUBLIC dmashim_pools absl::function_ref)
