/*
 * activity.c - what executes in each sandbox for a caller right now
 * (commands, terminals), counted in memory: seed 004's "active" state.
 */
#include "service.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>


struct busy {
  char sandbox_id[SBX_STORE_ID_MAX];
  unsigned n;
  struct busy *next;
};

static pthread_mutex_t busy_lock = PTHREAD_MUTEX_INITIALIZER;
static struct busy *busy_list;

void
sbx_service_busy_begin (const char *sandbox_id)
{
  pthread_mutex_lock (&busy_lock);
  struct busy *b;
  for (b = busy_list; b && strcmp (b->sandbox_id, sandbox_id) != 0; b = b->next)
    ;
  if (b == NULL && (b = calloc (1, sizeof *b)) != NULL)
    {
      snprintf (b->sandbox_id, sizeof b->sandbox_id, "%s", sandbox_id);
      b->next = busy_list;
      busy_list = b;
    }
  if (b)
    b->n++;
  pthread_mutex_unlock (&busy_lock);
}

void
sbx_service_busy_end (const char *sandbox_id)
{
  pthread_mutex_lock (&busy_lock);
  for (struct busy **pp = &busy_list; *pp; pp = &(*pp)->next)
    if (strcmp ((*pp)->sandbox_id, sandbox_id) == 0)
      {
        struct busy *b = *pp;
        if (--b->n == 0)
          {
            *pp = b->next;
            free (b);
          }
        break;
      }
  pthread_mutex_unlock (&busy_lock);
}

unsigned
sbx_service_busy (const char *sandbox_id)
{
  unsigned n = 0;
  pthread_mutex_lock (&busy_lock);
  for (struct busy *b = busy_list; b; b = b->next)
    if (strcmp (b->sandbox_id, sandbox_id) == 0)
      n = b->n;
  pthread_mutex_unlock (&busy_lock);
  return n + sbx_service_runs_active (sandbox_id);
}
