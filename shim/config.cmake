# shim/config: the configuration (DESIGN §6) — the key table, the TOML parser, env overrides — and
# the tool that renders the key table into README.md.
add_library(dmashim_config STATIC
  ${CMAKE_CURRENT_LIST_DIR}/config.cc
  ${CMAKE_CURRENT_LIST_DIR}/config_keys.cc
  ${CMAKE_CURRENT_LIST_DIR}/config_load.cc)
target_include_directories(dmashim_config PUBLIC ${PROJECT_SOURCE_DIR})
target_compile_options(dmashim_config PRIVATE -fvisibility=hidden)
target_link_libraries(dmashim_config PUBLIC
  dmashim_pools tomlplusplus::tomlplusplus absl::strings absl::status absl::statusor absl::time)

add_executable(dmashim-config-doc ${CMAKE_CURRENT_LIST_DIR}/config_doc.cc)
target_link_libraries(dmashim-config-doc PRIVATE dmashim_config)

# `ninja config-doc` rewrites the README's key table; tests/config fails while it is stale.
add_custom_target(config-doc
  COMMAND dmashim-config-doc --update ${PROJECT_SOURCE_DIR}/README.md
  COMMENT "Updating the configuration key table in README.md"
  VERBATIM)
