# The dmashim command line (run, stat, ctl).
add_executable(dmashim-cli
  ${CMAKE_CURRENT_LIST_DIR}/cli.cc
  ${CMAKE_CURRENT_LIST_DIR}/summary.cc
)
set_target_properties(dmashim-cli PROPERTIES OUTPUT_NAME dmashim)
target_compile_definitions(dmashim-cli PRIVATE
  DMASHIM_BUILD_SHIM_PATH="$<TARGET_FILE:dmashim>"
  DMASHIM_INSTALL_SHIM_PATH="${CMAKE_INSTALL_FULL_LIBDIR}/libdmashim.so")
target_link_libraries(dmashim-cli PRIVATE dmashim_exporter_lib dmashim_config)
add_dependencies(dmashim-cli dmashim dmashim-exporter)
install(TARGETS dmashim-cli RUNTIME DESTINATION bin)
