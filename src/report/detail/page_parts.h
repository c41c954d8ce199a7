// report/detail/page_parts.h — pieces both report pages (the closed-loop report and the threat
// page) put into their HTML.
#pragma once

namespace bulwark::report::detail {

// Runs first in <body>, so errors in Chart.js or the page script are counted too.
constexpr const char kErrorHook[] =
    "(function(){var n=0;function bump(){n+=1;document.body.dataset.errors=String(n);}"
    "window.onerror=function(){bump();return false;};"
    "window.addEventListener('unhandledrejection',bump);"
    "var original=console.error;console.error=function(){bump();return original.apply(console,arguments);};})();";

}  // namespace bulwark::report::detail
