# Turns a text asset (Chart.js, the page script, the stylesheet, the ATLAS data) into a C++ source
# file holding it as a string, so the binary carries it and the Debian package is needed only at
# build time.
#   cmake -DINPUT=file -DOUTPUT=file.cpp -DNAME=kSymbol [-DVERSION_NAME=kSymbol] [-DSTRIP_URL_SCHEMES=ON]
#         [-DDATA_ONLY=ON] -P embed_asset.cmake
# The text becomes raw-string chunks of at most 16,000 bytes (compilers cap one literal's length);
# the build stops if the delimiter occurs in the text, if the text could end the inline <script>
# or <style> element it is placed in, or if a URL scheme would survive into the page. DATA_ONLY:
# the text is data the binary parses and never inlines (ATLAS.yaml), so only the delimiter check
# applies.
cmake_minimum_required(VERSION 3.22)
foreach(var INPUT OUTPUT NAME)
  if(NOT DEFINED ${var})
    message(FATAL_ERROR "embed_asset.cmake: -D${var}= is required")
  endif()
endforeach()

file(READ "${INPUT}" text)
if(STRIP_URL_SCHEMES)
  # Chart.js names its homepage in the licence comment; the page must not hold a loadable URL, so
  # the comment keeps the host name without the scheme.
  string(REPLACE "https://" "" text "${text}")
  string(REPLACE "http://" "" text "${text}")
endif()

set(delimiter "bwasset")
string(FIND "${text}" ")${delimiter}\"" at)
if(NOT at EQUAL -1)
  message(FATAL_ERROR "embed_asset.cmake: ${INPUT} contains the raw-string delimiter ')${delimiter}\"'")
endif()
string(TOLOWER "${text}" lower)
set(inline_checks "</script" "</style" "<!--" "http://" "https://")
if(DATA_ONLY)
  set(inline_checks "")
endif()
foreach(bad ${inline_checks})
  string(FIND "${lower}" "${bad}" at)
  if(NOT at EQUAL -1)
    message(FATAL_ERROR "embed_asset.cmake: ${INPUT} contains '${bad}' at byte ${at}; it cannot be inlined in the report")
  endif()
endforeach()

set(version_line "")
if(DEFINED VERSION_NAME)
  # "Chart.js v3.9.1" in the banner comment.
  if(NOT text MATCHES "Chart\\.js v([0-9]+\\.[0-9]+\\.[0-9]+)")
    message(FATAL_ERROR "embed_asset.cmake: no 'Chart.js vX.Y.Z' banner in ${INPUT}")
  endif()
  set(version_line "const char ${VERSION_NAME}[] = \"${CMAKE_MATCH_1}\";\n")
endif()

set(out "// Generated from ${INPUT} by embed_asset.cmake; do not edit.\n")
string(APPEND out "#include \"report/detail/assets.h\"\n\nnamespace bulwark::report::detail {\n\n")
string(APPEND out "${version_line}")
string(APPEND out "const char ${NAME}[] =\n")
string(LENGTH "${text}" length)
set(chunk 16000)
set(offset 0)
while(offset LESS length)
  string(SUBSTRING "${text}" ${offset} ${chunk} piece)
  string(APPEND out "    R\"${delimiter}(${piece})${delimiter}\"\n")
  math(EXPR offset "${offset} + ${chunk}")
endwhile()
if(length EQUAL 0)
  string(APPEND out "    \"\"\n")
endif()
string(APPEND out "    ;\n\n}  // namespace bulwark::report::detail\n")

# Write only when changed, so an unchanged asset does not recompile.
set(old "")
if(EXISTS "${OUTPUT}")
  file(READ "${OUTPUT}" old)
endif()
if(NOT old STREQUAL out)
  file(WRITE "${OUTPUT}" "${out}")
endif()
