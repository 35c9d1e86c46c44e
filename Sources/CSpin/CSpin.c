// The module is header-only (CSpin.h); SwiftPM needs one source file for a C target.
#include "CSpin.h"
