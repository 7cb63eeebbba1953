# Finds libunwind (Debian: libunwind-dev), which ships pkg-config files but no CMake package.
# Defines Libunwind::libunwind.
find_path(Libunwind_INCLUDE_DIR NAMES libunwind.h PATH_SUFFIXES ${CMAKE_LIBRARY_ARCHITECTURE})
find_library(Libunwind_LIBRARY NAMES unwind-x86_64 unwind-generic)
find_library(Libunwind_BASE_LIBRARY NAMES libunwind.so.8 unwind)
include(FindPackageHandleStandardArgs)
find_package_handle_standard_args(Libunwind REQUIRED_VARS Libunwind_INCLUDE_DIR Libunwind_LIBRARY)
if(Libunwind_FOUND AND NOT TARGET Libunwind::libunwind)
  add_library(Libunwind::libunwind INTERFACE IMPORTED)
  set_target_properties(Libunwind::libunwind PROPERTIES
    INTERFACE_INCLUDE_DIRECTORIES "${Libunwind_INCLUDE_DIR}"
    INTERFACE_LINK_LIBRARIES "${Libunwind_LIBRARY}")
endif()
