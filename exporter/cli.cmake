# The dmashim command line (run, stat, ctl). The table formatting is a library so the integration
# tests read segments exactly as the command does.
add_library(dmashim_cli_lib STATIC ${CMAKE_CURRENT_LIST_DIR}/summary.cc)
target_include_directories(dmashim_cli_lib PUBLIC ${PROJECT_SOURCE_DIR})
target_link_libraries(dmashim_cli_lib PUBLIC dmashim_exporter_lib)

add_executable(dmashim-cli ${CMAKE_CURRENT_LIST_DIR}/cli.cc)
set_target_properties(dmashim-cli PROPERTIES OUTPUT_NAME dmashim)
target_compile_definitions(dmashim-cli PRIVATE
  DMASHIM_BUILD_SHIM_PATH="$<TARGET_FILE:dmashim>"
  DMASHIM_INSTALL_SHIM_PATH="${CMAKE_INSTALL_FULL_LIBDIR}/libdmashim.so")
target_link_libraries(dmashim-cli PRIVATE dmashim_cli_lib dmashim_config)
add_dependencies(dmashim-cli dmashim dmashim-exporter)
install(TARGETS dmashim-cli RUNTIME DESTINATION bin)
