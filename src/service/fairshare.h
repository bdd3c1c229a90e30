/*
 * fairshare.h - the CPU shared equally between organisations, however
 * many sandboxes each runs (fairshare.c tells how).
 */
#ifndef SBX_SERVICE_FAIRSHARE_H
#define SBX_SERVICE_FAIRSHARE_H

#include "../common/error.h"

struct sbx_store;
struct sbx_engine;
struct sbx_fairshare;

/* Start the worker; it weighs the sandboxes the store says are live at
   once, and again after each kick. */
int sbx_fairshare_start (struct sbx_store *store, struct sbx_engine *engine, struct sbx_fairshare **out,
                         struct sbx_err *err);
/* A sandbox was created, ended, paused or resumed: weigh again soon.
   NULL does nothing. */
void sbx_fairshare_kick (struct sbx_fairshare *f);
void sbx_fairshare_stop (struct sbx_fairshare *f);
/* The weight of each of an organisation's N live sandboxes, so that a new
   sandbox starts with its share instead of waiting for the worker. */
unsigned sbx_fairshare_weight (unsigned n);

#endif
