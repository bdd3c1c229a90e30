/*
 * check.h - the counting CHECK of the unit test programs: a failed
 * condition is printed with its place and counted, and the program goes
 * on; main prints the counts and fails when any check did.
 */
#ifndef SBX_TEST_CHECK_H
#define SBX_TEST_CHECK_H

#include <stdio.h>

static int passed, failed;

#define CHECK(cond)                                                                                    \
  do                                                                                                   \
    {                                                                                                  \
      if (cond)                                                                                        \
        passed++;                                                                                      \
      else                                                                                             \
        {                                                                                              \
          failed++;                                                                                    \
          fprintf (stderr, "FAIL %s:%d: %s\n", __FILE__, __LINE__, #cond);                             \
        }                                                                                              \
    }                                                                                                  \
  while (0)

#endif
