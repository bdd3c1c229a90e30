#ifndef SBX_LOG_STUB
#define SBX_LOG_STUB
enum sbx_log_level { SBX_LOG_DEBUG, SBX_LOG_INFO, SBX_LOG_WARN, SBX_LOG_ERROR };
static inline void sbx_log_fields (enum sbx_log_level l, const char *msg, ...) { (void) l; (void) msg; }
#endif
