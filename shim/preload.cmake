# libdmashim.so: the preloadable shim.
add_library(dmashim SHARED
  ${CMAKE_CURRENT_LIST_DIR}/capi.cc
  ${CMAKE_CURRENT_LIST_DIR}/cuda.cc
  ${CMAKE_CURRENT_LIST_DIR}/diag.cc
  ${CMAKE_CURRENT_LIST_DIR}/ibverbs.cc
  ${CMAKE_CURRENT_LIST_DIR}/interpose.cc
  ${CMAKE_CURRENT_LIST_DIR}/real.cc
  ${CMAKE_CURRENT_LIST_DIR}/runtime.cc
  ${CMAKE_CURRENT_LIST_DIR}/sites.cc
  ${CMAKE_CURRENT_LIST_DIR}/stats_store.cc
)
target_include_directories(dmashim PUBLIC ${PROJECT_SOURCE_DIR})
target_compile_options(dmashim PRIVATE -fvisibility=hidden -fvisibility-inlines-hidden)
# libunwind: call sites on slow paths (shim/sites.cc). Local-only unwinding (unw_backtrace) lives in
# libunwind.so.8 itself, beside the architecture library FindLibunwind names.
target_link_libraries(dmashim PRIVATE dmashim_config dmashim_segment dmashim_pools
  Libunwind::libunwind ${Libunwind_BASE_LIBRARY} ${CMAKE_DL_LIBS})
target_link_options(dmashim PRIVATE
  -Wl,--version-script=${CMAKE_CURRENT_LIST_DIR}/libdmashim.map
  -Wl,--exclude-libs,ALL -Wl,-z,nodelete -Wl,--no-undefined)
set_target_properties(dmashim PROPERTIES LINK_DEPENDS ${CMAKE_CURRENT_LIST_DIR}/libdmashim.map)
