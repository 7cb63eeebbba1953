# `dmashim stat --sites/--advise/--json` and `dmashim ctl` (issue 4): call-site symbolization from
# /proc/<pid>/maps and ELF symbol tables, the control-area client, the stat formatter. Part of the
# command's library (declared in cli.cmake), so tests use exactly what the command uses.
target_sources(dmashim_cli_lib PRIVATE
  ${CMAKE_CURRENT_LIST_DIR}/control.cc
  ${CMAKE_CURRENT_LIST_DIR}/stat.cc
  ${CMAKE_CURRENT_LIST_DIR}/symbolize.cc
)
target_link_libraries(dmashim_cli_lib PUBLIC absl::time)
