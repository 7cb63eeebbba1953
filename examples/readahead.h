/* libreadahead.so: the example's optional path, in a library of its own so a dmashim pool can
 * match it by caller ("caller = \"libreadahead.so\"") and make it fail fast. */
#ifndef DMASHIM_EXAMPLE_READAHEAD_H_
#define DMASHIM_EXAMPLE_READAHEAD_H_
/* Maps a 2 MiB huge-page buffer, fills it, holds it `hold_us`, unmaps it. 0 or -1 (errno). */
int readahead_fetch(unsigned hold_us);
#endif
