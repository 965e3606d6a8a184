# Run by `cmake --install`: installs the pgflow binary stripped, its debug information split
# off into <prefix>/<bindir>/.debug/pgflow.debug (compressed) and named in the binary's
# .gnu_debuglink, so that gdb and addr2line find it beside the binary without being told. The
# symbol table goes with the debug information (6 MB instead of 8 for the binary): pgflow never
# symbolizes its own stack.
# Set by CMakeLists.txt's install(CODE): PGFLOW_BINARY (the built binary), PGFLOW_OBJCOPY,
# PGFLOW_SPLIT_DEBUG (OFF: a build without debug information, only stripped),
# PGFLOW_STAGE_DIR (a scratch directory in the build tree), PGFLOW_BINDIR ("bin").

function(pgflow_objcopy)
  execute_process(COMMAND "${PGFLOW_OBJCOPY}" ${ARGN} RESULT_VARIABLE rc ERROR_VARIABLE err)
  if(NOT rc EQUAL 0)
    message(FATAL_ERROR "objcopy ${ARGN}: ${err}")
  endif()
endfunction()

if(NOT EXISTS "${PGFLOW_BINARY}")
  message(FATAL_ERROR "${PGFLOW_BINARY} is not built: run `ninja -C build pgflow` first")
endif()
file(REMOVE_RECURSE "${PGFLOW_STAGE_DIR}")
file(MAKE_DIRECTORY "${PGFLOW_STAGE_DIR}/.debug")
set(stripped "${PGFLOW_STAGE_DIR}/pgflow")
set(debug "${PGFLOW_STAGE_DIR}/.debug/pgflow.debug")
if(PGFLOW_SPLIT_DEBUG)
  pgflow_objcopy(--only-keep-debug --compress-debug-sections=zlib "${PGFLOW_BINARY}" "${debug}")
  # --add-gnu-debuglink records the debug file's name (not its directory) and checksum.
  pgflow_objcopy(--strip-debug --strip-unneeded "--add-gnu-debuglink=${debug}"
                 "${PGFLOW_BINARY}" "${stripped}")
else()
  pgflow_objcopy(--strip-debug --strip-unneeded "${PGFLOW_BINARY}" "${stripped}")
endif()

# file(INSTALL) adds DESTDIR, prints what it installs and lists it in install_manifest.txt.
file(INSTALL "${stripped}" DESTINATION "${CMAKE_INSTALL_PREFIX}/${PGFLOW_BINDIR}"
     FILE_PERMISSIONS OWNER_READ OWNER_WRITE OWNER_EXECUTE GROUP_READ GROUP_EXECUTE
                      WORLD_READ WORLD_EXECUTE)
if(PGFLOW_SPLIT_DEBUG)
  file(INSTALL "${debug}" DESTINATION "${CMAKE_INSTALL_PREFIX}/${PGFLOW_BINDIR}/.debug"
       FILE_PERMISSIONS OWNER_READ OWNER_WRITE GROUP_READ WORLD_READ)
endif()
file(REMOVE_RECURSE "${PGFLOW_STAGE_DIR}")
